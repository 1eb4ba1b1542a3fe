import ELF
import Symbols
import Targets

/// Whether a hunk's bytes are code or data on the live target: code needs instruction boundaries
/// (and a guard on every thread's program counter), data only needs the target stopped.
///
/// A process says it directly: `/proc/PID/maps` marks each mapping executable or not. Elsewhere
/// (kernels) the symbols decide: a hunk inside a data object (`r`, `d`, `b`… in nm's letters)
/// with no function around it is data.
enum HunkPlacement: Equatable {
    case code
    /// `reason` says how it was told: `r--p mapping of /usr/bin/x`, `data object banner`.
    case data(reason: String)
    /// Neither source knows: treated as code, so the boundary check refuses it.
    case unknown
}

struct HunkPlacementClassifier {
    /// Every mapping of the process (anonymous ones too), nil for other targets.
    let mappings: [ProcessSymbols.Mapping]?
    let symbols: SymbolIndex?

    init(target: MemoryTarget, symbols: SymbolIndex?) {
        if let process = target as? ProcessTarget {
            mappings = try? ProcessSymbols.mappings(pid: process.pid)
        } else {
            mappings = nil
        }
        self.symbols = symbols
    }

    init(mappings: [ProcessSymbols.Mapping]?, symbols: SymbolIndex?) {
        self.mappings = mappings
        self.symbols = symbols
    }

    func classify(_ range: Range<UInt64>, function: SymbolRecord?) -> HunkPlacement {
        if let mappings {
            // Every byte must lie in mappings of one kind; the first and last byte's suffice, as a
            // hunk is far smaller than a page.
            let last = range.isEmpty ? range.lowerBound : range.upperBound - 1
            guard let first = mappings.first(where: { $0.range.contains(range.lowerBound) }),
                  let end = mappings.first(where: { $0.range.contains(last) }) else { return .unknown }
            if first.isExecutable || end.isExecutable { return .code }
            let what = first.path.isEmpty ? "anonymous" : first.path
            return .data(reason: "\(first.permissions) mapping of \(what)")
        }
        if function != nil { return .code }
        if let hit = symbols?.symbolize(range.lowerBound), !hit.symbol.isFunction,
           Self.dataLetters.contains(hit.symbol.kindByte), hit.symbol.size.map({ range.upperBound <= hit.symbol.address + $0 }) ?? false {
            return .data(reason: "data object \(hit.symbol.name) (\(hit.symbol.kind))")
        }
        return .unknown
    }

    /// nm's letters for initialised, read-only and zeroed data, and weak or unique objects.
    static let dataLetters: Set<UInt8> = Set("rRdDbBgGsSvVu".utf8)
}

extension HunkPlacement {
    var isData: Bool {
        if case .data = self { return true }
        return false
    }
}
