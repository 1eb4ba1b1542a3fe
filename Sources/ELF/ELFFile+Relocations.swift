extension ELFFile {
    /// The relocations of every SHT_REL/SHT_RELA section whose `sh_info` is `section`'s index, sorted
    /// by offset (ties keep file order). Dynamic relocation tables (`.rela.dyn`, sh_info 0) apply to
    /// the null section `sections[0]`.
    public func relocations(applyingTo section: Section) throws(ELFError) -> [Relocation] {
        var result: [Relocation] = []
        var tables = 0
        for index in relocationTableIndexes where Int(sections[index].info) == section.index {
            let table = sections[index]
            result += try relocations(in: table)
            tables += 1
        }
        guard tables > 1 || !isSorted(result) else { return result }
        // Sort positions rather than rely on the sort being stable.
        let order = result.indices.sorted { (result[$0].offset, $0) < (result[$1].offset, $1) }
        return order.map { result[$0] }
    }

    /// The entries of one SHT_REL or SHT_RELA section, in file order.
    public func relocations(in table: Section) throws(ELFError) -> [Relocation] {
        let headerOffset = headerOffset(of: table)
        guard table.isRelocationTable else {
            throw .malformed(file: path, structure: table.label, offset: headerOffset,
                             expected: "SHT_REL (9) or SHT_RELA (4)", found: "type \(table.type)")
        }
        let explicit = table.type == ELFConstants.SHT_RELA
        let elfClass = header.elfClass
        let minimum = Raw.Relocation.size(elfClass, explicitAddend: explicit)
        guard table.entrySize >= UInt64(minimum), table.entrySize <= 0x1000 else {
            throw .malformed(file: path, structure: "section header \(table.index) (\(table.name)) sh_entsize",
                             offset: headerOffset, expected: "\(minimum) bytes per relocation", found: "\(table.entrySize)")
        }
        let start = try reader.range(table.offset, table.size, "\(table.label) contents")
        let entrySize = Int(table.entrySize)
        let count = Int(table.size) / entrySize

        var symbols: SymbolTable?
        if table.link != 0 {
            let link = Int(table.link)
            guard link < sections.count,
                  sections[link].type == ELFConstants.SHT_SYMTAB || sections[link].type == ELFConstants.SHT_DYNSYM else {
                throw .malformed(file: path, structure: "section header \(table.index) (\(table.name)) sh_link",
                                 offset: headerOffset, expected: "the index of a symbol table",
                                 found: link < sections.count ? "\(link) (\(sections[link].name), type \(sections[link].type))" : "\(link)")
            }
            symbols = try SymbolTable(file: self, section: sections[link])
        }
        // In relocatable files r_offset is relative to the section being relocated (sh_info);
        // REL addends are read from there. Elsewhere r_offset is a virtual address.
        let target: Section? = header.type == .relocatable && Int(table.info) < sections.count && table.info != 0
            ? sections[Int(table.info)] : nil
        let machine = header.machine

        var result: [Relocation] = []
        result.reserveCapacity(count)
        var cachedType: (type: UInt32, name: String, size: Int?) = (.max, "", nil)
        for index in 0..<count {
            let at = start + index * entrySize
            let raw = Raw.Relocation(reader, at: at, class: elfClass, explicitAddend: explicit)
            if raw.type != cachedType.type {
                cachedType = (raw.type, RelocationType.name(raw.type, machine: machine),
                              RelocationType.fieldSize(raw.type, machine: machine))
            }
            var symbol = Symbol(index: 0, name: "", value: 0, size: 0, type: .notype, binding: .local, other: 0,
                                sectionIndex: 0)
            if raw.symbol != 0 {
                guard let symbols, Int(raw.symbol) < symbols.count else {
                    throw .malformed(file: path, structure: "relocation \(index) of \(table.name)", offset: UInt64(at),
                                     expected: "a symbol index below \(symbols?.count ?? 1)"
                                        + (symbols.map { " (entries in \($0.section.name))" } ?? " (no symbol table linked)"),
                                     found: "\(raw.symbol)")
                }
                symbol = try symbols.symbol(Int(raw.symbol))
                if symbol.type == .section, symbol.name.isEmpty, !symbol.hasSpecialSectionIndex,
                   Int(symbol.sectionIndex) < sections.count {
                    symbol.name = sections[Int(symbol.sectionIndex)].name
                }
            }
            var addend = raw.addend
            if !explicit, let size = cachedType.size, size > 0 {
                addend = try implicitAddend(of: raw, size: size, target: target, at: at,
                                            structure: "relocation \(index) of \(table.name)")
            }
            result.append(Relocation(offset: raw.offset, type: raw.type, typeName: cachedType.name,
                                     symbolIndex: raw.symbol, symbolName: symbol.name, symbolValue: symbol.value,
                                     symbolSectionIndex: symbol.sectionIndex, symbolType: symbol.type,
                                     addend: addend, hasExplicitAddend: explicit, fieldSize: cachedType.size,
                                     relocationSectionIndex: table.index))
        }
        return result
    }

    /// The addend a REL entry keeps in the field it relocates, sign-extended. Fields wider than
    /// 8 bytes (TLS descriptors) keep their addend in the second word.
    private func implicitAddend(of raw: Raw.Relocation, size: Int, target: Section?, at: Int,
                                structure: @autoclosure () -> String) throws(ELFError) -> Int64 {
        let width = min(size, 8)
        let wordOffset = UInt64(size > 8 ? size / 2 : 0)
        let fieldStart: UInt64
        if let target {
            guard target.hasFileData, raw.offset <= target.size, UInt64(size) <= target.size - raw.offset else {
                throw .malformed(file: path, structure: structure(), offset: UInt64(at),
                                 expected: "a \(size)-byte field inside \(target.label) (size \(Hex.address(target.size)))",
                                 found: "r_offset \(Hex.address(raw.offset))")
            }
            let base = try reader.range(target.offset, target.size, "\(target.label) contents")
            fieldStart = UInt64(base) + raw.offset + wordOffset   // inside the checked section: no overflow
        } else {
            guard let offset = fileOffset(ofAddress: raw.offset) else {
                throw .malformed(file: path, structure: structure(), offset: UInt64(at),
                                 expected: "r_offset inside a PT_LOAD segment's file bytes",
                                 found: Hex.address(raw.offset))
            }
            let (start, overflow) = offset.addingReportingOverflow(wordOffset)
            guard !overflow else {
                throw .malformed(file: path, structure: structure(), offset: UInt64(at),
                                 expected: "a field inside the file", found: "file offset \(Hex.address(offset))")
            }
            fieldStart = start
        }
        let o = try reader.range(fieldStart, UInt64(width), structure() + " field")
        switch width {
        case 1: return Int64(Int8(bitPattern: reader.u8(o)))
        case 2: return Int64(Int16(bitPattern: reader.u16(o)))
        case 4: return Int64(Int32(bitPattern: reader.u32(o)))
        default: return Int64(bitPattern: reader.u64(o))
        }
    }

    private func isSorted(_ relocations: [Relocation]) -> Bool {
        var previous: UInt64 = 0
        for relocation in relocations {
            if relocation.offset < previous { return false }
            previous = relocation.offset
        }
        return true
    }
}
