import ELF
import Symbols
import Targets

/// Places a bundle made from one file (`suture diff old new` of an executable or a shared library)
/// on the process that maps that file.
///
/// The bundle's identity names the file's build-id, and its hunks name symbols without a module
/// (the file knew no other). In a process, the same name can exist in the executable and in
/// several libraries (`_init`, a static `helper`), so the hunks are narrowed to the image the
/// build-id picks: a library's hunks get its module (`parse_header [libfoo.so]`), the
/// executable's get the ordinal of its own symbol among the process' same-named ones.
public enum ProcessBinding {
    public struct Result: Sendable {
        public var bundle: PatchBundle
        /// The image the bundle is for, when its build-id is mapped.
        public var image: ProcessSymbols.Image?
        /// What was narrowed, for messages: `gate → gate/2`.
        public var changes: [String]
    }

    /// Returns `bundle` narrowed to the image with its build-id, or unchanged when no mapped image
    /// has it (the identity check then refuses it).
    public static func bind(_ bundle: PatchBundle, images: [ProcessSymbols.Image], symbols: SymbolIndex) -> Result {
        guard let wanted = bundle.target?.buildID?.lowercased(), bundle.target?.kind == .process,
              let image = images.first(where: { $0.buildID == wanted }) else {
            return Result(bundle: bundle, image: nil, changes: [])
        }
        var bound = bundle
        var changes: [String] = []
        func narrow(_ name: String, _ module: inout String?, _ ordinal: inout Int?) {
            guard module == nil else { return }
            // The ordinal a file-made bundle carries counts that file's symbols; the process'
            // index counts every image's, in address order.
            let all = symbols.symbols(named: name)
            let mine = all.indices.filter { all[$0].module == image.module }
            let pick: Int
            if let ordinal {
                guard ordinal >= 1, ordinal <= mine.count else { return }
                pick = mine[ordinal - 1]
            } else {
                guard mine.count == 1 else { return }    // absent or ambiguous: resolving will say so
                pick = mine[0]
            }
            let before = name + (ordinal.map { "/\($0)" } ?? "")
            if let library = image.module {
                module = library
                ordinal = mine.count > 1 ? pick + 1 : nil
            } else {
                ordinal = all.count > 1 ? pick + 1 : nil
            }
            let after = name + (ordinal.map { "/\($0)" } ?? "") + (module.map { " [\($0)]" } ?? "")
            if after != before { changes.append("\(before) → \(after)") }
        }
        for i in bound.hunks.indices {
            guard let name = bound.hunks[i].symbol else { continue }
            var (module, ordinal) = (bound.hunks[i].module, bound.hunks[i].ordinal)
            narrow(name, &module, &ordinal)
            (bound.hunks[i].module, bound.hunks[i].ordinal) = (module, ordinal)
        }
        for i in bound.hunks.indices {
            guard var reference = bound.hunks[i].reference else { continue }
            var (module, ordinal) = (reference.module, reference.ordinal)
            narrow(reference.symbol, &module, &ordinal)
            (reference.module, reference.ordinal) = (module, ordinal)
            bound.hunks[i].reference = reference
        }
        if var functions = bound.functions {
            for i in functions.indices {
                var (module, ordinal) = (functions[i].module, functions[i].ordinal)
                narrow(functions[i].symbol, &module, &ordinal)
                (functions[i].module, functions[i].ordinal) = (module, ordinal)
            }
            bound.functions = functions
        }
        return Result(bundle: bound, image: image, changes: changes)
    }

    /// Convenience for a live process: reads its images, then binds.
    public static func bind(_ bundle: PatchBundle, pid: Int32, symbols: SymbolIndex) throws -> Result {
        bind(bundle, images: try ProcessSymbols.images(pid: pid), symbols: symbols)
    }
}
