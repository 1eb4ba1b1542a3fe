import ELF

extension SymbolIndex {
    /// The symbols of an ELF file's `.symtab`, plus those of `.dynsym` that `.symtab` lacks (all
    /// of them when the file is stripped): functions, objects, untyped labels (`_end`), TLS and
    /// ifuncs, with the type letter `nm` would print. Undefined, section, file and common symbols
    /// have no address and are left out.
    ///
    /// In relocatable objects (`.o`, `.ko`) a symbol's value is an offset into its section: the
    /// records then carry `section` (".text") and lookups by address need that section. `module`
    /// is stored in every record (the kernel module's name for a `.ko`).
    public init(elf: ELFFile, module: String? = nil) throws {
        let relocatable = elf.header.type == .relocatable
        let sections = elf.sections
        var records: [SymbolRecord] = []
        var seen = Set<SeenKey>()

        func add(_ symbol: Symbol) {
            guard let record = Self.record(symbol, sections: sections, relocatable: relocatable, module: module)
            else { return }
            if seen.insert(SeenKey(symbol)).inserted { records.append(record) }
        }
        let symtab = try elf.symbols()
        records.reserveCapacity(symtab.count)
        for symbol in symtab { add(symbol) }
        for symbol in try elf.dynamicSymbols() { add(symbol) }
        self.init(records)

        // In a linked file, an address outside every allocated section (past `_end`, between
        // `.data` and `.bss`) is in no symbol, whatever zero-size label sits there.
        if !relocatable {
            regions = sections.filter { $0.isAllocated && $0.size > 0 }
                .map { $0.address..<($0.address &+ $0.size) }
                .sorted { $0.lowerBound < $1.lowerBound }
        }
    }

    /// The same symbol in `.symtab` and `.dynsym` counts once. `.symtab` may spell a versioned
    /// symbol `stderr@GLIBC_2.2.5` where `.dynsym` says `stderr` (the version lives in
    /// `.gnu.version`), so names compare up to the `@`.
    private struct SeenKey: Hashable {
        var name: Substring
        var value: UInt64
        var sectionIndex: UInt32

        init(_ symbol: Symbol) {
            name = symbol.name.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)[0]
            value = symbol.value
            sectionIndex = symbol.sectionIndex
        }
    }

    /// An ELF symbol as a record, or nil for what has no address (or is not a symbol nm lists).
    static func record(_ symbol: Symbol, sections: [Section], relocatable: Bool, module: String?) -> SymbolRecord? {
        guard symbol.index != 0, !symbol.name.isEmpty, symbol.isDefined,
              symbol.sectionIndex != ELFConstants.SHN_COMMON else { return nil }
        switch symbol.type {
        case .section, .file, .common: return nil
        default: break
        }
        let isAbsolute = symbol.sectionIndex == ELFConstants.SHN_ABS
        let section: Section?
        if isAbsolute {
            section = nil
        } else {
            // Other reserved indexes (SHN_LORESERVE and up) name no section we know.
            guard Int(symbol.sectionIndex) < sections.count else { return nil }
            section = sections[Int(symbol.sectionIndex)]
        }
        let isFunction = symbol.type == .function || symbol.type == .gnuIFunc
        return SymbolRecord(name: symbol.name, address: symbol.value,
                            kindByte: nmLetter(symbol, section: section),
                            // nm prints no size for 0: unknown, inferred like a kallsyms symbol.
                            size: symbol.size == 0 ? nil : symbol.size,
                            module: module,
                            section: relocatable && !isAbsolute ? section?.name : nil,
                            isFunction: isFunction)
    }

    /// The letter binutils' nm prints (bfd_decode_symclass): ifunc `i`, weak `W` (`V` for
    /// objects), GNU unique `u`, absolute `a`, otherwise by the section's flags (code `t`, read-only
    /// data `r`, data `d`, no file bytes `b`, non-allocated `n`, debug `N`), uppercase when global.
    static func nmLetter(_ symbol: Symbol, section: Section?) -> UInt8 {
        if symbol.type == .gnuIFunc { return UInt8(ascii: "i") }
        switch symbol.binding {
        case .weak: return symbol.type == .object ? UInt8(ascii: "V") : UInt8(ascii: "W")
        case .other(10): return UInt8(ascii: "u")                  // STB_GNU_UNIQUE
        case .other: return UInt8(ascii: "?")
        case .local, .global: break
        }
        var letter: UInt8
        if let section {
            let hasContents = section.type != ELFConstants.SHT_NOBITS
            if section.isExecutable {
                letter = UInt8(ascii: "t")
            } else if section.isAllocated && hasContents {
                letter = section.isWritable ? UInt8(ascii: "d") : UInt8(ascii: "r")
            } else if !hasContents {
                letter = UInt8(ascii: "b")
            } else if isDebugSection(section.name) {
                letter = UInt8(ascii: "N")
            } else {
                letter = UInt8(ascii: "n")
            }
        } else {
            letter = UInt8(ascii: "a")
        }
        // N (debug) has no lowercase twin in nm.
        if symbol.binding == .global && letter != UInt8(ascii: "N") { letter -= 0x20 }
        return letter
    }

    /// bfd marks these SEC_DEBUGGING.
    private static func isDebugSection(_ name: String) -> Bool {
        name.hasPrefix(".debug") || name.hasPrefix(".zdebug") || name.hasPrefix(".gnu.debuglto_")
            || name.hasPrefix(".line") || name.hasPrefix(".stab") || name.hasPrefix(".gnu.linkonce.wi.")
    }
}
