import Foundation
import ELF
import Symbols

/// The file a live function's code came from (a kernel module `.ko`, an object `.o`, or a linked
/// image that still has `.symtab`), with every byte range the loader or the kernel rewrites.
///
/// It answers two questions: what must a live function look like (a `FunctionImage`: the file's
/// bytes plus the `RuntimeSites` mask, for the engine's whole-function preflight check), and does a
/// given dump of live code match the file (`ReferenceFunction.compare`), every differing byte
/// explained by a relocation or a rewrite table.
///
/// A stripped vmlinux (Debian ships no System.map) has no symbols of its own: `init(vmlinux:live:)`
/// finds its functions through the live kernel's kallsyms, less the KASLR slide.
public struct ReferenceObject: Sendable {
    public let file: ELFFile
    public let sites: RuntimeSites
    /// For a stripped vmlinux: the live kernel's symbols and how far KASLR moved them.
    private let live: (symbols: SymbolIndex, slide: Int64)?

    /// Opens `path` and reads its run-time sites (relocations and the kernel's rewrite tables,
    /// through their `.rela.*` sections for a relocatable object).
    public init(path: String) throws {
        try self.init(file: ELFFile(path: path))
    }

    public init(file: ELFFile) throws {
        self.file = file
        self.sites = try RuntimeSites(object: file)
        self.live = nil
    }

    /// A stripped vmlinux (decompressed, KASLR relocation table still appended) matched with the
    /// running kernel's `symbols`: the slide is live `_text` minus the file's `.text` address
    /// (`_text` opens `.text` in arch/x86/kernel/vmlinux.lds.S), and the rewrite tables are found
    /// between the live bounding symbols.
    public init(vmlinux file: ELFFile, live symbols: SymbolIndex) throws {
        guard let text = file.section(named: ".text") else {
            throw ReferenceError.notAKernel(file: file.path, reason: "it has no .text section")
        }
        guard let liveText = symbols.symbols(named: "_text").first(where: { $0.module == nil }) else {
            throw ReferenceError.notAKernel(file: file.path, reason: "the live symbols have no _text to measure the KASLR slide by")
        }
        let slide = Int64(bitPattern: liveText.address &- text.address)
        self.file = file
        self.sites = try RuntimeSites(vmlinux: file, symbols: symbols, slide: slide)
        self.live = (symbols, slide)
    }

    /// Opens a reference for code of a live target: a `.ko`, `.o` or ELF with `.symtab` as it is; a
    /// stripped vmlinux, or a bzImage (`vmlinuz`, decompressed in memory), through `liveSymbols`.
    public static func open(path: String, liveSymbols: SymbolIndex?) throws -> ReferenceObject {
        if let liveSymbols, !isELF(path) {
            // Not an ELF file: perhaps a bzImage, whose payload is the vmlinux.
            let bytes = try KernelImage.extractVmlinux(fromBzImage: path)
            return try ReferenceObject(vmlinux: ELFFile(bytes: bytes, name: path), live: liveSymbols)
        }
        let file = try ELFFile(path: path)
        if file.header.type != .relocatable, let liveSymbols,
           try !file.symbols().contains(where: { $0.type == .function && $0.isDefined }) {
            return try ReferenceObject(vmlinux: file, live: liveSymbols)
        }
        return try ReferenceObject(file: file)
    }

    /// Whether the file starts with the ELF magic (an unreadable file counts as ELF, so that
    /// ELFFile reports why it cannot be read).
    private static func isELF(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return true }
        defer { try? handle.close() }
        let magic = (try? handle.read(upToCount: 4)) ?? Data()
        return magic.isEmpty || Array(magic) == [0x7f, 0x45, 0x4c, 0x46]
    }

    public var path: String { file.path }

    /// How far KASLR moved the live kernel from the file's addresses (stripped vmlinux only).
    public var slide: Int64? { live?.slide }

    /// The defined function symbols named `name`, in file order (section, then value): the order in
    /// which a module's loader lays them out, so `ordinal` counts like kallsyms' `name/N` does.
    public func functionSymbols(named name: String) throws -> [Symbol] {
        try file.symbols()
            .filter { $0.name == name && $0.type == .function && $0.isDefined && !$0.hasSpecialSectionIndex }
            .sorted { ($0.sectionIndex, $0.value) < ($1.sectionIndex, $1.value) }
    }

    /// The function `name` as the file has it. With several functions of that name (static functions
    /// in different source files), `ordinal` (1-based) picks one, else `liveSize` when exactly one of
    /// them has that size; otherwise the candidates are listed in the error.
    public func function(named name: String, ordinal: Int? = nil, liveSize: UInt64? = nil) throws -> ReferenceFunction {
        if let live { return try liveFunction(named: name, ordinal: ordinal, liveSize: liveSize, live.symbols, live.slide) }
        let candidates = try functionSymbols(named: name)
        let symbol: Symbol
        if candidates.count == 1 {
            symbol = candidates[0]
        } else if candidates.isEmpty {
            throw ReferenceError.functionNotFound(file: path, symbol: name)
        } else if let ordinal, ordinal >= 1, ordinal <= candidates.count {
            symbol = candidates[ordinal - 1]
        } else if let liveSize, candidates.filter({ $0.size == liveSize }).count == 1 {
            symbol = candidates.first { $0.size == liveSize }!
        } else {
            throw ReferenceError.ambiguous(file: path, symbol: name, candidates: candidates.enumerated().map { i, s in
                "\(name)/\(i + 1) (section \(s.sectionIndex)+\(Hex.address(s.value)), \(s.size) bytes)"
            })
        }
        return try function(symbol)
    }

    /// A built-in function of a stripped vmlinux: placed by the live symbol less the slide, sized by
    /// `liveSize` or the live symbol's size (kallsyms: up to the next symbol).
    private func liveFunction(named name: String, ordinal: Int?, liveSize: UInt64?, _ symbols: SymbolIndex,
                              _ slide: Int64) throws -> ReferenceFunction {
        let record = try symbols.resolve(name: name, module: nil, ordinal: ordinal)
        let address = record.address &- UInt64(bitPattern: slide)
        guard let size = liveSize ?? record.size, size > 0 else {
            throw ReferenceError.badSymbol(file: path, symbol: name, reason: "the live symbols give no size")
        }
        guard let section = file.sections.first(where: {
            $0.isExecutable && $0.hasFileData && $0.address <= address && address < $0.address + $0.size
        }), size <= section.address + section.size - address else {
            throw ReferenceError.badSymbol(file: path, symbol: name,
                                           reason: "its link address \(Hex.address(address)) (live \(Hex.address(record.address)) less the KASLR slide) is in no code section of the file")
        }
        let offset = address - section.address
        let data = try file.data(of: section)
        let range = offset..<offset + size
        return ReferenceFunction(file: path, name: name, section: section, offset: offset,
                                 bytes: Array(data[Int(offset)..<Int(offset + size)]),
                                 mask: sites.mask(section: section, range: range),
                                 sites: sites.sites(in: section, overlapping: range))
    }

    /// The bytes and mask of one function symbol of this file.
    public func function(_ symbol: Symbol) throws -> ReferenceFunction {
        let index = Int(symbol.sectionIndex)
        guard index > 0, index < file.sections.count else {
            throw ReferenceError.badSymbol(file: path, symbol: symbol.name, reason: "section index \(symbol.sectionIndex) is not a section")
        }
        let section = file.sections[index]
        guard section.isExecutable, section.hasFileData else {
            throw ReferenceError.badSymbol(file: path, symbol: symbol.name, reason: "its section \(section.name) holds no code bytes")
        }
        guard symbol.size > 0 else {
            throw ReferenceError.badSymbol(file: path, symbol: symbol.name, reason: "its size is 0 (no st_size in the symbol table)")
        }
        // Symbols of relocatable objects are section offsets; those of linked images are addresses.
        let offset = file.header.type == .relocatable ? symbol.value : symbol.value &- section.address
        guard offset <= section.size, symbol.size <= section.size - offset else {
            throw ReferenceError.badSymbol(file: path, symbol: symbol.name,
                                           reason: "\(Hex.address(offset))+\(Hex.address(symbol.size)) lies outside \(section.name) (size \(Hex.address(section.size)))")
        }
        let data = try file.data(of: section)
        let bytes = Array(data[Int(offset)..<Int(offset + symbol.size)])
        let range = offset..<offset + symbol.size
        return ReferenceFunction(file: path, name: symbol.name, section: section, offset: offset, bytes: bytes,
                                 mask: sites.mask(section: section, range: range),
                                 sites: sites.sites(in: section, overlapping: range))
    }
}

/// One function of a reference file: its bytes, where they are in the file, and which of them the
/// loader or the kernel may rewrite.
public struct ReferenceFunction: Sendable {
    public let file: String
    public let name: String
    public let section: Section
    /// Offset of the first byte from the start of `section`.
    public let offset: UInt64
    public let bytes: [UInt8]
    /// 0x00 where a run-time site covers the byte, 0xff where the live byte must equal the file's.
    public let mask: [UInt8]
    /// The run-time sites sharing a byte with the function, section-relative, in offset order.
    public let sites: [RuntimeSite]

    public var size: Int { bytes.count }

    /// Where the function's first byte is in the file (`section.offset + offset`): the article's
    /// "file offset" arithmetic.
    public var fileOffset: UInt64 { section.offset + offset }

    /// Number of bytes a run-time site may rewrite.
    public var maskedByteCount: Int { mask.reduce(0) { $0 + ($1 == 0 ? 1 : 0) } }

    /// The run-pre image the engine's function check compares, named as the live target names it.
    public func image(module: String?, ordinal: Int? = nil) -> FunctionImage {
        FunctionImage(symbol: name, module: module, ordinal: ordinal, bytes: bytes, mask: mask)
    }

    /// Compares a dump of the live function with the file: which bytes differ, which site explains
    /// each, and which no site explains.
    public func compare(live: [UInt8]) -> FunctionComparison {
        var explained: [RuntimeSite.Table: Int] = [:]
        var unexplained: [Int] = []
        var differing = 0
        let common = min(live.count, bytes.count)
        for i in 0..<common where live[i] != bytes[i] {
            differing += 1
            if mask[i] == 0, let site = explanation(at: UInt64(i)) {
                explained[site.table, default: 0] += 1
            } else {
                unexplained.append(i)
            }
        }
        // A dump of the wrong length differs in every byte only one side has.
        unexplained.append(contentsOf: common..<max(live.count, bytes.count))
        return FunctionComparison(function: name, file: file, size: bytes.count, liveSize: live.count,
                                  differing: differing + (max(live.count, bytes.count) - common),
                                  explainedBytes: explained, unexplained: unexplained,
                                  live: live, expected: bytes)
    }

    /// The site explaining a difference at function offset `at`: a table's site wins over the plain
    /// relocation inside it (the ftrace site names the whole call, the relocation only its operand).
    public func explanation(at functionOffset: UInt64) -> RuntimeSite? {
        let at = offset + functionOffset
        var best: RuntimeSite?
        for site in sites where site.range.contains(at) {
            if best == nil || (best!.table == .relocation && site.table != .relocation) { best = site }
        }
        return best
    }
}

/// What comparing a live function with its reference file found.
public struct FunctionComparison: Sendable {
    public let function: String
    public let file: String
    public let size: Int
    public let liveSize: Int
    /// Bytes where live and file differ (including bytes only one side has).
    public let differing: Int
    /// Differing bytes per table that explains them.
    public let explainedBytes: [RuntimeSite.Table: Int]
    /// Function offsets of differences no site explains, in order.
    public let unexplained: [Int]
    let live: [UInt8]
    let expected: [UInt8]

    /// True when every differing byte is explained.
    public var matches: Bool { unexplained.isEmpty }

    /// `nfs_flock+0x2f: nfs.ko has 74, live 75` for the first unexplained difference.
    public var firstMismatch: String? {
        guard let i = unexplained.first else { return nil }
        let file = i < expected.count ? Hex.bytes([expected[i]]) : "nothing"
        let found = i < live.count ? Hex.bytes([live[i]]) : "nothing"
        return "\(function)+\(Hex.address(UInt64(i))): \(self.file.split(separator: "/").last.map(String.init) ?? self.file) has \(file), live \(found)"
    }

    /// One line: how many bytes differ and what explains them.
    public var summary: String {
        let tables = explainedBytes.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key.rawValue < $1.key.rawValue) }
            .map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let explained = differing - unexplained.count
        var text = "\(function): \(size) bytes, \(differing) differ from the file"
        if explained > 0 { text += "; \(explained) explained (\(tables))" }
        if let first = firstMismatch {
            text += "; \(unexplained.count) unexplained, first at \(first)"
        } else {
            text += differing == 0 ? "" : ", none unexplained"
        }
        return text
    }
}

public enum ReferenceError: Error, CustomStringConvertible, Sendable {
    case functionNotFound(file: String, symbol: String)
    case ambiguous(file: String, symbol: String, candidates: [String])
    case badSymbol(file: String, symbol: String, reason: String)
    /// Given as a kernel image, but it is not one this code can place.
    case notAKernel(file: String, reason: String)

    public var description: String {
        switch self {
        case let .functionNotFound(file, symbol):
            return "\(file): no function symbol \(symbol) in .symtab (is this the object the live code came from?)"
        case let .ambiguous(file, symbol, candidates):
            return "\(file): \(candidates.count) functions are named \(symbol): \(candidates.joined(separator: ", ")); name one as \(symbol)/N"
        case let .badSymbol(file, symbol, reason):
            return "\(file): function \(symbol): \(reason)"
        case let .notAKernel(file, reason):
            return "\(file): cannot use it as the kernel image of the live kernel: \(reason)"
        }
    }
}
