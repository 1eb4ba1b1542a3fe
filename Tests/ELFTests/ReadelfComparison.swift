import ELF
import Foundation
import Testing
import TestSupport

/// Compares everything `ELFFile` reads from `path` with readelf's output, recording one issue per
/// table with the first differences. Returns how many entries were compared per kind, so callers can
/// assert the comparison was not vacuous.
@discardableResult
func expectMatchesReadelf(_ path: String, file: ELFFile? = nil, checkRelocations: Bool = true,
                          sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Int] {
    let elf = try file ?? ELFFile(path: path)
    let oracle = Readelf(path)
    var counts: [String: Int] = [:]
    var differences: [String] = []
    func differ(_ what: String) { if differences.count < 30 { differences.append(what) } }

    // File header (readelf -hW).
    let header = try oracle.header()
    let classText = elf.header.elfClass == .elf64 ? "ELF64" : "ELF32"
    if header["Class"] != classText { differ("class: readelf \(header["Class"] ?? "-") vs ELFFile \(classText)") }
    if header["Entry point address"] != Hex.address(elf.header.entry) {
        differ("entry: readelf \(header["Entry point address"] ?? "-") vs ELFFile \(Hex.address(elf.header.entry))")
    }
    let typeText: String = switch elf.header.type {
    case .relocatable: "REL"
    case .executable: "EXEC"
    case .sharedObject: "DYN"
    case .core: "CORE"
    case .other(let value): "\(value)"
    }
    if header["Type"]?.hasPrefix(typeText + " ") != true { differ("type: readelf \(header["Type"] ?? "-") vs ELFFile \(typeText)") }
    let machineText: String = switch elf.header.machine {
    case .x86_64: "Advanced Micro Devices X86-64"
    case .i386: "Intel 80386"
    case .aarch64: "AArch64"
    default: "\(elf.header.machine.rawValue)"
    }
    if header["Machine"] != machineText { differ("machine: readelf \(header["Machine"] ?? "-") vs ELFFile \(machineText)") }

    // Sections (readelf -SW).
    let sectionRows = try oracle.sections()
    counts["sections"] = sectionRows.count
    if sectionRows.count != elf.sections.count {
        differ("section count: readelf \(sectionRows.count), ELFFile \(elf.sections.count)")
    }
    for row in sectionRows where row.index < elf.sections.count {
        let s = elf.sections[row.index]
        let ours = Readelf.SectionRow(
            index: s.index, name: s.name, type: Readelf.sectionTypeName(s.type), address: s.address,
            offset: s.offset, size: s.size, entrySize: s.entrySize, flags: Readelf.sectionFlagLetters(s.flags),
            link: s.link, info: s.info, alignment: s.alignment)
        var theirs = row
        theirs.flags = String(theirs.flags.sorted())
        if ours != theirs { differ("section \(row.index): readelf \(theirs) vs ELFFile \(ours)") }
    }
    if elf.header.sectionNameTableIndex > 0, let text = elf.sections.last(where: { !$0.name.isEmpty }) {
        let names = elf.sections[elf.header.sectionNameTableIndex]
        let offset = try #require(try elf.data(of: names).bytes.firstRange(of: Array(text.name.utf8) + [0])?.lowerBound)
        if try elf.string(at: UInt32(offset), inTable: names) != text.name { differ("string(at:inTable:) on \(names.name)") }
    }

    // Segments (readelf -lW).
    if !elf.segments.isEmpty || elf.header.type != .relocatable {
        let segmentRows = try oracle.segments()
        counts["segments"] = segmentRows.count
        let ours = elf.segments.map { p in
            Readelf.SegmentRow(type: Readelf.segmentTypeName(p.type), offset: p.offset, virtualAddress: p.virtualAddress,
                               physicalAddress: p.physicalAddress, fileSize: p.fileSize, memorySize: p.memorySize,
                               flags: (p.isReadable ? "R" : "") + (p.isWritable ? "W" : "") + (p.isExecutable ? "E" : ""),
                               alignment: p.alignment)
        }
        if ours != segmentRows { differ("segments: readelf \(segmentRows) vs ELFFile \(ours)") }
    }

    // Symbols (readelf -sW), every table readelf lists.
    var symbolCount = 0
    let tables = try oracle.symbolTables()
    for table in tables {
        guard let section = elf.section(named: table.name) else { differ("no section \(table.name)"); continue }
        let symbols = try elf.symbols(in: section)
        let isDynamic = section.type == ELFConstants.SHT_DYNSYM
        if table.name == ".symtab" { #expect(try elf.symbols() == symbols, sourceLocation: sourceLocation) }
        if table.name == ".dynsym" { #expect(try elf.dynamicSymbols() == symbols, sourceLocation: sourceLocation) }
        if symbols.count != table.rows.count {
            differ("\(table.name): readelf \(table.rows.count) symbols, ELFFile \(symbols.count)")
        }
        for (row, symbol) in zip(table.rows, symbols) {
            symbolCount += 1
            var name = symbol.name
            if symbol.type == .section, name.isEmpty, !symbol.hasSpecialSectionIndex, Int(symbol.sectionIndex) < elf.sections.count {
                name = elf.sections[Int(symbol.sectionIndex)].name   // readelf names section symbols
            }
            var expectedName = row.name
            if isDynamic, let at = expectedName.firstIndex(of: "@") { expectedName = String(expectedName[..<at]) }
            let ours = Readelf.SymbolRow(
                index: symbol.index, value: symbol.value, size: symbol.size, type: Readelf.symbolTypeName(symbol.type),
                binding: Readelf.bindingName(symbol.binding), visibility: Readelf.visibilityName(symbol.visibility),
                sectionIndex: symbol.hasSpecialSectionIndex || symbol.isUndefined
                    ? Readelf.sectionIndexName(symbol.sectionIndex) : "\(symbol.sectionIndex)", name: name)
            var theirs = row
            theirs.name = expectedName
            if ours != theirs { differ("\(table.name) symbol \(row.index): readelf \(theirs) vs ELFFile \(ours)") }
        }
    }
    if tables.isEmpty { #expect(try elf.symbols().isEmpty && elf.dynamicSymbols().isEmpty, sourceLocation: sourceLocation) }
    counts["symbols"] = symbolCount

    // Relocations (readelf -rW): per table, then merged per relocated section.
    if checkRelocations {
        var relocationCount = 0
        var expectedByTarget: [Int: [(offset: UInt64, row: Readelf.RelocationRow)]] = [:]
        let is64 = elf.header.elfClass == .elf64
        for table in try oracle.relocationTables() {
            guard let section = elf.sections.first(where: { $0.offset == table.offset && $0.name == table.name }) else {
                differ("no relocation section \(table.name) at \(Hex.address(table.offset))"); continue
            }
            let relocations = try elf.relocations(in: section)
            if relocations.count != table.rows.count {
                differ("\(table.name): readelf \(table.rows.count) relocations, ELFFile \(relocations.count)")
            }
            for (i, (row, r)) in zip(table.rows, relocations).enumerated() {
                relocationCount += 1
                let info = is64 ? UInt64(r.symbolIndex) << 32 | UInt64(r.type) : UInt64(r.symbolIndex) << 8 | UInt64(r.type)
                var theirs = row
                if let name = theirs.symbolName, let at = name.firstIndex(of: "@") { theirs.symbolName = String(name[..<at]) }
                let ours = Readelf.RelocationRow(
                    offset: r.offset, info: info, type: r.typeName,
                    symbolValue: r.symbolIndex == 0 ? nil : r.symbolValue,
                    symbolName: r.symbolIndex == 0 ? nil : r.symbolName,
                    addend: r.hasExplicitAddend ? r.addend : nil)
                if ours != theirs { differ("\(table.name) relocation \(i): readelf \(theirs) vs ELFFile \(ours)") }
                expectedByTarget[Int(section.info), default: []].append((r.offset, row))
            }
        }
        counts["relocations"] = relocationCount
        for (target, expected) in expectedByTarget where target < elf.sections.count {
            let merged = try elf.relocations(applyingTo: elf.sections[target])
            let expectedOffsets = expected.enumerated()
                .sorted { ($0.element.offset, $0.offset) < ($1.element.offset, $1.offset) }.map(\.element.offset)
            if merged.map(\.offset) != expectedOffsets {
                differ("relocations(applyingTo: section \(target)): offsets differ from readelf's merged tables")
            }
        }
    }

    // Notes and build-id (readelf -n).
    let (noteRows, buildIDs) = try oracle.notes()
    let notes = try elf.notes()
    counts["notes"] = notes.count
    let ourNotes = notes.map { Readelf.NoteRow(owner: $0.name, size: UInt64($0.descriptor.count)) }
    if ourNotes != noteRows { differ("notes: readelf \(noteRows) vs ELFFile \(ourNotes)") }
    let buildID = try elf.buildID().map { Hex.bytes($0, separator: "") }
    if buildID != buildIDs.first { differ("build-id: readelf \(buildIDs.first ?? "none") vs ELFFile \(buildID ?? "none")") }

    #expect(differences.isEmpty, Comment(rawValue: "\(path) differs from readelf:\n" + differences.joined(separator: "\n")),
            sourceLocation: sourceLocation)
    return counts
}

/// readelf's names for numeric fields (binutils 2.40), so rows compare as text.
extension Readelf {
    static func sectionTypeName(_ type: UInt32) -> String {
        switch type {
        case 0: return "NULL"
        case 1: return "PROGBITS"
        case 2: return "SYMTAB"
        case 3: return "STRTAB"
        case 4: return "RELA"
        case 5: return "HASH"
        case 6: return "DYNAMIC"
        case 7: return "NOTE"
        case 8: return "NOBITS"
        case 9: return "REL"
        case 11: return "DYNSYM"
        case 14: return "INIT_ARRAY"
        case 15: return "FINI_ARRAY"
        case 16: return "PREINIT_ARRAY"
        case 17: return "GROUP"
        case 18: return "SYMTAB SECTION INDICES"
        case 19: return "RELR"
        case 0x6fff_fff5: return "GNU_ATTRIBUTES"
        case 0x6fff_fff6: return "GNU_HASH"
        case 0x6fff_fffd: return "VERDEF"
        case 0x6fff_fffe: return "VERNEED"
        case 0x6fff_ffff: return "VERSYM"
        case 0x7000_0001: return "X86_64_UNWIND"
        default: return "type \(Hex.address(UInt64(type)))"
        }
    }

    /// Flag letters sorted, as a set (readelf's key: W A X M S I L O G T C E R l).
    static func sectionFlagLetters(_ flags: UInt64) -> String {
        let letters: [(UInt64, Character)] = [
            (0x1, "W"), (0x2, "A"), (0x4, "X"), (0x10, "M"), (0x20, "S"), (0x40, "I"), (0x80, "L"),
            (0x100, "O"), (0x200, "G"), (0x400, "T"), (0x800, "C"), (0x8000_0000, "E"), (0x20_0000, "R"),
            (0x1000_0000, "l"),
        ]
        var known: UInt64 = 0
        var result: [Character] = []
        for (bit, letter) in letters where flags & bit != 0 { result.append(letter); known |= bit }
        if flags & ~known != 0 { result.append("?") }
        return String(result.sorted())
    }

    static func segmentTypeName(_ type: UInt32) -> String {
        switch type {
        case 0: return "NULL"
        case 1: return "LOAD"
        case 2: return "DYNAMIC"
        case 3: return "INTERP"
        case 4: return "NOTE"
        case 5: return "SHLIB"
        case 6: return "PHDR"
        case 7: return "TLS"
        case 0x6474_e550: return "GNU_EH_FRAME"
        case 0x6474_e551: return "GNU_STACK"
        case 0x6474_e552: return "GNU_RELRO"
        case 0x6474_e553: return "GNU_PROPERTY"
        default: return "type \(Hex.address(UInt64(type)))"
        }
    }

    static func symbolTypeName(_ type: SymbolType) -> String {
        switch type {
        case .notype: return "NOTYPE"
        case .object: return "OBJECT"
        case .function: return "FUNC"
        case .section: return "SECTION"
        case .file: return "FILE"
        case .common: return "COMMON"
        case .tls: return "TLS"
        case .gnuIFunc: return "IFUNC"
        case .other(let value): return "type \(value)"
        }
    }

    static func bindingName(_ binding: SymbolBinding) -> String {
        switch binding {
        case .local: return "LOCAL"
        case .global: return "GLOBAL"
        case .weak: return "WEAK"
        case .other(10): return "UNIQUE"
        case .other(let value): return "binding \(value)"
        }
    }

    static func visibilityName(_ visibility: UInt8) -> String {
        ["DEFAULT", "INTERNAL", "HIDDEN", "PROTECTED"][Int(visibility & 3)]
    }

    static func sectionIndexName(_ index: UInt32) -> String {
        switch index {
        case ELFConstants.SHN_UNDEF: return "UND"
        case ELFConstants.SHN_ABS: return "ABS"
        case ELFConstants.SHN_COMMON: return "COM"
        default: return "\(index)"
        }
    }
}
