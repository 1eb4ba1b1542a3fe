import ELF

/// Reads the sites of one file into a flat list; `RuntimeSites` sorts and indexes them.
struct RuntimeSiteCollector {
    let file: ELFFile
    private(set) var sites: [RuntimeSite] = []
    private(set) var skipped: [RuntimeSite.Table: Int] = [:]
    private var codeCache: [Int: ByteView] = [:]
    /// Allocated sections with file bytes, by address: where a linked image's address lies.
    private let placed: [(start: UInt64, end: UInt64, index: Int)]

    init(file: ELFFile) {
        self.file = file
        placed = file.sections
            .filter { $0.isAllocated && $0.hasFileData && $0.size > 0 && $0.flags & ELFConstants.SHF_TLS == 0 }
            .map { (start: $0.address, end: $0.address &+ $0.size, index: $0.index) }
            .sorted { $0.start < $1.start }
    }

    // MARK: Relocatable objects

    /// Every relocation of an allocated section: the loader writes `fieldSize` bytes there.
    mutating func addObjectRelocations() throws(RuntimeSitesError) {
        for table in file.sections where table.isRelocationTable {
            let target = Int(table.info)
            guard target > 0, target < file.sections.count, file.sections[target].isAllocated else { continue }
            for relocation in try readingELF({ () throws(ELFError) in try file.relocations(in: table) }) {
                // An unknown type still writes something; the address size is the usual width.
                let size = relocation.fieldSize ?? file.header.addressSize
                guard size > 0 else { continue }
                sites.append(RuntimeSite(section: target, offset: relocation.offset, length: size, table: .relocation))
            }
        }
    }

    /// The kernel's tables, each entry located through the table's own relocation at the entry's
    /// site field: S + A names the section and offset of the site (for PC32 entries too, since the
    /// field stores S + A - P and the kernel adds P back).
    mutating func addObjectTables() throws(RuntimeSitesError) {
        for layout in RuntimeSiteTableLayout.kernelTables(addressSize: file.header.addressSize) {
            for section in file.sections where section.name == layout.sectionName && section.hasFileData {
                let entries = try readingELF { () throws(ELFError) in try file.data(of: section) }
                let relocations = try readingELF { () throws(ELFError) in try file.relocations(applyingTo: section) }
                for relocation in relocations where relocation.offset % UInt64(layout.stride) == UInt64(layout.field) {
                    let target = Int(relocation.symbolSectionIndex)
                    guard relocation.symbolIndex != 0, target > 0, target < file.sections.count,
                          UInt32(target) < ELFConstants.SHN_LORESERVE, file.sections[target].hasFileData else {
                        skipped[layout.table, default: 0] += 1
                        continue
                    }
                    let targetSection = file.sections[target]
                    let (offset, overflow) = Int64(bitPattern: relocation.symbolValue).addingReportingOverflow(relocation.addend)
                    guard !overflow, offset >= 0, UInt64(offset) < targetSection.size else {
                        throw .malformedTable(file: file.path, table: section.name, offset: relocation.offset,
                                              expected: "a site inside \(targetSection.name) (size \(Hex.address(targetSection.size)))",
                                              found: "\(relocation.symbolName)\(relocation.addend >= 0 ? "+" : "-")"
                                                + Hex.address(relocation.addend.magnitude))
                    }
                    let entry = Int(relocation.offset) - layout.field
                    try add(layout, entries: entries, entry: entry, entryPosition: relocation.offset,
                            section: targetSection, offset: UInt64(offset))
                }
            }
        }
    }

    // MARK: Linked images

    /// Dynamic relocations (`.rela.dyn`, `.rela.plt`): their offsets are addresses.
    mutating func addLinkedRelocations() throws(RuntimeSitesError) {
        for table in file.sections where table.isRelocationTable && table.isAllocated {
            for relocation in try readingELF({ () throws(ELFError) in try file.relocations(in: table) }) {
                let size = relocation.fieldSize ?? file.header.addressSize
                guard size > 0 else { continue }
                guard let (index, offset) = locate(relocation.offset) else {
                    skipped[.relocation, default: 0] += 1
                    continue
                }
                sites.append(RuntimeSite(section: index, offset: offset, length: size, table: .relocation))
            }
        }
    }

    /// The kernel's tables of a linked image whose `.symtab` still names their bounds.
    mutating func addLinkedTablesFromSymbolTable() throws(RuntimeSitesError) {
        let wanted = Set(RuntimeSiteTableLayout.kernelTables(addressSize: 8).flatMap { [$0.startSymbol, $0.endSymbol] })
        var bounds: [String: UInt64] = [:]
        for symbol in try readingELF({ () throws(ELFError) in try file.symbols() })
        where symbol.isDefined && symbol.type != .section && wanted.contains(symbol.name) {
            if bounds[symbol.name] == nil { bounds[symbol.name] = symbol.value }
        }
        guard !bounds.isEmpty else { return }
        try addLinkedTables { bounds[$0] }
    }

    /// The kernel's tables of a linked image, found between the addresses `lookup` gives for each
    /// table's start and end symbols. Tables whose two symbols are both unknown are absent.
    mutating func addLinkedTables(lookup: (String) -> UInt64?) throws(RuntimeSitesError) {
        let addressSize = file.header.addressSize
        for layout in RuntimeSiteTableLayout.kernelTables(addressSize: addressSize) {
            let start = lookup(layout.startSymbol), end = lookup(layout.endSymbol)
            guard let start, let end else {
                if start == nil && end == nil { continue }
                throw .missingSymbol(file: file.path, table: layout.table.rawValue,
                                     symbol: start == nil ? layout.startSymbol : layout.endSymbol)
            }
            guard end >= start, (end - start) % UInt64(layout.stride) == 0, end - start < 1 << 32 else {
                throw .malformedTable(file: file.path, table: layout.table.rawValue, offset: start,
                                      expected: "\(layout.endSymbol) at or after \(layout.startSymbol), "
                                        + "a whole number of \(layout.stride)-byte entries apart",
                                      found: "\(Hex.address(start))..\(Hex.address(end))")
            }
            let entries = try readingELF { () throws(ELFError) in try file.bytes(atAddress: start, count: Int(end - start)) }
            for entry in stride(from: 0, to: entries.count, by: layout.stride) {
                let field = entry + layout.field
                let entryAddress = start + UInt64(field)
                let site: UInt64
                if layout.isPointer {
                    site = addressSize == 8
                        ? try readingELF { () throws(ELFError) in try entries.load(as: UInt64.self, at: field) }
                        : UInt64(try readingELF { () throws(ELFError) in try entries.load(as: UInt32.self, at: field) })
                    // ftrace skips NULL entries (linker padding between objects' __mcount_loc).
                    if site == 0 { skipped[layout.table, default: 0] += 1; continue }
                } else {
                    let relative = try readingELF { () throws(ELFError) in try entries.load(as: Int32.self, at: field) }
                    // 0 points at the entry itself: padding (the kernel skips it too, e.g. .smp_locks
                    // is padded to a page).
                    if relative == 0 { skipped[layout.table, default: 0] += 1; continue }
                    site = entryAddress &+ UInt64(bitPattern: Int64(relative))
                }
                guard let (index, offset) = locate(site) else {
                    skipped[layout.table, default: 0] += 1
                    continue
                }
                try add(layout, entries: entries, entry: entry, entryPosition: entryAddress,
                        section: file.sections[index], offset: offset)
            }
        }
    }

    /// The decompressor's KASLR relocation lists, appended after the section header table of the
    /// vmlinux inside a bzImage. Read backwards from the end, each list ends with a 0 word: 32-bit
    /// fields, then inverse 32-bit fields (per-CPU), then 64-bit fields; each entry is the field's
    /// link-time address truncated to 32 bits (sign-extended back).
    mutating func addKASLRRelocations() throws(RuntimeSitesError) {
        let header = file.header
        let entrySize: UInt64 = header.elfClass == .elf64 ? 64 : 40
        let all = file.contents
        let elfEnd = header.sectionHeaderOffset + UInt64(header.sectionHeaderCount) * entrySize
        guard header.sectionHeaderOffset != 0, elfEnd < UInt64(all.count) else { return }
        let trailing = UInt64(all.count) - elfEnd
        guard trailing % 4 == 0 else {
            throw .malformedTable(file: file.path, table: RuntimeSite.Table.kaslr.rawValue, offset: elfEnd,
                                  expected: "32-bit entries after the section header table",
                                  found: "\(trailing) bytes")
        }
        var position = all.count
        for width in [4, 4, 8] {
            while true {
                guard position - 4 >= Int(elfEnd) else {
                    throw .malformedTable(file: file.path, table: RuntimeSite.Table.kaslr.rawValue, offset: elfEnd,
                                          expected: "three lists each ending with a 0 word", found: "the start of the table")
                }
                position -= 4
                let value = try readingELF { () throws(ELFError) in try all.load(as: Int32.self, at: position) }
                if value == 0 { break }
                let address = UInt64(bitPattern: Int64(value))
                guard let (index, offset) = locate(address) else {
                    skipped[.kaslr, default: 0] += 1
                    continue
                }
                sites.append(RuntimeSite(section: index, offset: offset, length: width, table: .kaslr))
            }
        }
    }

    // MARK: Static call trampolines

    /// `__SCT__name` trampolines of this file (a module's tracepoints, or vmlinux's): 5 bytes,
    /// `jmp target` or `ret` + padding, rewritten by static_call_update().
    mutating func addTrampolinesFromSymbolTable() throws(RuntimeSitesError) {
        let relocatable = file.header.type == .relocatable
        for symbol in try readingELF({ () throws(ELFError) in try file.symbols() })
        where symbol.name.hasPrefix("__SCT__") && symbol.isDefined && symbol.sectionIndex < ELFConstants.SHN_LORESERVE {
            if relocatable {
                let index = Int(symbol.sectionIndex)
                guard index < file.sections.count, file.sections[index].isExecutable,
                      symbol.value + 5 <= file.sections[index].size else { continue }
                sites.append(RuntimeSite(section: index, offset: symbol.value, length: 5, table: .staticCallTrampoline))
            } else {
                addTrampoline(at: symbol.value)
            }
        }
    }

    mutating func addTrampoline(at address: UInt64) {
        guard let (index, offset) = locate(address), file.sections[index].isExecutable else {
            skipped[.staticCallTrampoline, default: 0] += 1
            return
        }
        sites.append(RuntimeSite(section: index, offset: offset, length: 5, table: .staticCallTrampoline))
    }

    // MARK: Helpers

    /// Adds the site of one table entry after finding its length.
    private mutating func add(_ layout: RuntimeSiteTableLayout, entries: ByteView, entry: Int, entryPosition: UInt64,
                              section: Section, offset: UInt64) throws(RuntimeSitesError) {
        let length: Int
        switch layout.length {
        case .fixed(let n):
            length = n
        case .entryByte(let at):
            guard entry >= 0, entry + at < entries.count else {
                throw .malformedTable(file: file.path, table: layout.table.rawValue, offset: entryPosition,
                                      expected: "a whole \(layout.stride)-byte entry", found: "the table's end")
            }
            length = Int(entries[entry + at])
        case .instruction(let fallback):
            let code = try bytes(of: section)
            let at = Int(offset)
            length = RuntimeSiteTableLayout.siteInstructionLength(code[at], at + 1 < code.count ? code[at + 1] : nil) ?? fallback
        }
        guard length > 0 else { return }      // an empty alternative rewrites nothing
        guard offset + UInt64(length) <= section.size else {
            throw .malformedTable(file: file.path, table: layout.table.rawValue, offset: entryPosition,
                                  expected: "a \(length)-byte site inside \(section.name) (size \(Hex.address(section.size)))",
                                  found: "a site at \(section.name)+\(Hex.address(offset))")
        }
        sites.append(RuntimeSite(section: section.index, offset: offset, length: length, table: layout.table))
    }

    private mutating func bytes(of section: Section) throws(RuntimeSitesError) -> ByteView {
        if let cached = codeCache[section.index] { return cached }
        let view = try readingELF { () throws(ELFError) in try file.data(of: section) }
        codeCache[section.index] = view
        return view
    }

    /// The section holding `address` in a linked image, and the offset into it.
    func locate(_ address: UInt64) -> (Int, UInt64)? {
        var low = 0, high = placed.count
        while low < high {
            let mid = (low + high) / 2
            if placed[mid].start <= address { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return nil }
        let candidate = placed[low - 1]
        guard address < candidate.end else { return nil }
        return (candidate.index, address - candidate.start)
    }
}

/// Runs an ELF read, turning its error into a `RuntimeSitesError`.
@inline(__always)
func readingELF<T>(_ body: () throws(ELFError) -> T) throws(RuntimeSitesError) -> T {
    do { return try body() } catch { throw .elf(error) }
}
