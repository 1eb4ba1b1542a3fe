import ELF

/// One of the two files of a diff, read once: its functions and objects ("units"), the relocations
/// of the sections holding them, and lookups from a section offset to the unit containing it.
struct ObjectDiffSide {
    let file: ELFFile
    let isRelocatable: Bool
    let units: [ObjectDiff.Unit]
    /// Per section: unit indices sorted by offset (for "which unit holds this target").
    private let unitsBySection: [Int: [Int]]
    /// Per section: its relocations with section-relative offsets, sorted by offset.
    private let relocationsBySection: [Int: [Relocation]]
    /// Allocated sections by address (linked images): where an address lies.
    private let placed: [(start: UInt64, end: UInt64, index: Int)]
    /// Contents of the allocated sections, by index (nil for the others), read once.
    private let contents: [ByteView?]

    init(file: ELFFile) throws(ObjectDiffError) {
        self.file = file
        isRelocatable = file.header.type == .relocatable
        let sections = file.sections
        let symbols: [Symbol]
        do { symbols = try file.symbols() } catch { throw .elf(error) }

        // Functions and data objects with a size, in allocated sections. Aliases (same place, same
        // size) are kept once, preferring a global name.
        var found: [(symbol: Symbol, kind: ObjectDiff.Unit.Kind)] = []
        for symbol in symbols where symbol.isDefined && symbol.size > 0 && symbol.sectionIndex < ELFConstants.SHN_LORESERVE {
            let kind: ObjectDiff.Unit.Kind
            switch symbol.type {
            case .function, .gnuIFunc: kind = .function
            case .object, .tls: kind = .object
            default: continue
            }
            let index = Int(symbol.sectionIndex)
            guard index < sections.count, sections[index].isAllocated else { continue }
            found.append((symbol, kind))
        }
        func offset(_ s: Symbol) -> UInt64 {
            file.header.type == .relocatable ? s.value : s.value &- sections[Int(s.sectionIndex)].address
        }
        found.sort { (a, b) in
            (a.symbol.sectionIndex, offset(a.symbol), a.symbol.binding == .local ? 1 : 0, a.symbol.index)
                < (b.symbol.sectionIndex, offset(b.symbol), b.symbol.binding == .local ? 1 : 0, b.symbol.index)
        }
        var units: [ObjectDiff.Unit] = []
        units.reserveCapacity(found.count)
        for (symbol, kind) in found {
            let section = sections[Int(symbol.sectionIndex)]
            let start = offset(symbol)
            guard start <= section.size, symbol.size <= section.size - start else {
                throw .elf(.malformed(file: file.path, structure: "symbol \(symbol.index) (\(symbol.name))",
                                      offset: section.offset, expected: "a range inside \(section.name) (size \(Hex.address(section.size)))",
                                      found: "\(Hex.address(start)) + \(symbol.size) bytes"))
            }
            if let last = units.last, last.sectionIndex == section.index, last.offset == start, last.size == symbol.size,
               last.kind == kind { continue }
            units.append(ObjectDiff.Unit(name: symbol.name, kind: kind, section: section.name, sectionIndex: section.index,
                                         offset: start, address: section.address &+ start, size: symbol.size, ordinal: nil))
        }
        // Same-named units are told apart by their order (section, then offset): name/N.
        var byName: [String: [Int]] = [:]
        for (i, unit) in units.enumerated() { byName[unit.name, default: []].append(i) }
        for indices in byName.values where indices.count > 1 {
            for (n, i) in indices.enumerated() { units[i].ordinal = n + 1 }
        }
        self.units = units

        var bySection: [Int: [Int]] = [:]
        for (i, unit) in units.enumerated() { bySection[unit.sectionIndex, default: []].append(i) }
        unitsBySection = bySection

        var contents: [ByteView?] = []
        contents.reserveCapacity(sections.count)
        do {
            for section in sections { contents.append(section.isAllocated ? try file.data(of: section) : nil) }
        } catch { throw .elf(error) }
        self.contents = contents

        placed = sections.filter { $0.isAllocated && $0.size > 0 && $0.flags & ELFConstants.SHF_TLS == 0 }
            .map { (start: $0.address, end: $0.address &+ $0.size, index: $0.index) }
            .sorted { $0.start < $1.start }

        // Relocations of the sections that hold units, offsets made section-relative.
        var relocations: [Int: [Relocation]] = [:]
        do {
            if file.header.type == .relocatable {
                for index in Set(units.map(\.sectionIndex)) {
                    let list = try file.relocations(applyingTo: sections[index])
                    if !list.isEmpty { relocations[index] = list }
                }
            } else {
                for table in sections where table.isRelocationTable && table.isAllocated {
                    for var relocation in try file.relocations(in: table) {
                        guard let (index, offset) = Self.locate(relocation.offset, in: placed) else { continue }
                        relocation.offset = offset
                        relocations[index, default: []].append(relocation)
                    }
                }
                for key in relocations.keys { relocations[key]!.sort { $0.offset < $1.offset } }
            }
        } catch { throw .elf(error) }
        relocationsBySection = relocations
    }

    // MARK: Lookups

    var path: String { file.path }

    func section(_ index: Int) -> Section { file.sections[index] }

    /// The unit's bytes (empty for SHT_NOBITS: they are zeros on both sides).
    func bytes(of unit: ObjectDiff.Unit) throws(ObjectDiffError) -> ByteView {
        do {
            guard let data = contents[unit.sectionIndex], data.count > 0 else { return try file.data(of: file.sections[unit.sectionIndex]) }
            return try data.view(offset: Int(unit.offset), count: Int(unit.size))
        } catch { throw .elf(error) }
    }

    /// Relocations whose field starts in `range` of section `index`.
    func relocations(in index: Int, range: Range<UInt64>) -> ArraySlice<Relocation> {
        guard let list = relocationsBySection[index] else { return [] }
        var low = 0, high = list.count
        while low < high {
            let mid = (low + high) / 2
            if list[mid].offset < range.lowerBound { low = mid + 1 } else { high = mid }
        }
        var end = low
        while end < list.count, list[end].offset < range.upperBound { end += 1 }
        return list[low..<end]
    }

    /// Every relocation of the file, with the section it applies to.
    func allRelocations() -> [(section: Int, relocation: Relocation)] {
        relocationsBySection.flatMap { key, list in list.map { (key, $0) } }
    }

    /// The unit of section `index` containing `offset`.
    func unit(containing offset: UInt64, in index: Int) -> Int? {
        guard let list = unitsBySection[index] else { return nil }
        var low = 0, high = list.count
        while low < high {
            let mid = (low + high) / 2
            if units[list[mid]].offset <= offset { low = mid + 1 } else { high = mid }
        }
        // Nested or overlapping symbols are rare; look back a little for one that still contains it.
        var i = low - 1
        while i >= 0, i >= low - 4 {
            let unit = units[list[i]]
            if offset >= unit.offset && offset < unit.offset + unit.size { return list[i] }
            i -= 1
        }
        return nil
    }

    /// The section and offset of an address (linked images).
    func locate(_ address: UInt64) -> (Int, UInt64)? { Self.locate(address, in: placed) }

    static func locate(_ address: UInt64, in placed: [(start: UInt64, end: UInt64, index: Int)]) -> (Int, UInt64)? {
        var low = 0, high = placed.count
        while low < high {
            let mid = (low + high) / 2
            if placed[mid].start <= address { low = mid + 1 } else { high = mid }
        }
        guard low > 0, address < placed[low - 1].end else { return nil }
        return (placed[low - 1].index, address - placed[low - 1].start)
    }

    /// SHF_MERGE|SHF_STRINGS: a section of string literals, which the linker may merge and share.
    func isStringSection(_ index: Int) -> Bool {
        guard index > 0, index < file.sections.count else { return false }
        let flags = file.sections[index].flags
        return flags & ELFConstants.SHF_MERGE != 0 && flags & ELFConstants.SHF_STRINGS != 0
    }

    /// The NUL-terminated string at `offset` of a string section (without the NUL), or nil when
    /// the offset is outside it.
    func string(in index: Int, at offset: UInt64) -> [UInt8]? {
        guard let data = contents[index], offset < UInt64(data.count) else { return nil }
        return data.withUnsafeBytes { raw -> [UInt8] in
            var end = Int(offset)
            while end < raw.count, raw[end] != 0 { end += 1 }
            return Array(raw[Int(offset)..<end])
        }
    }

    /// The kernel module this file is (`name=` in `.modinfo`, else a `.ko` file's name), or nil.
    func moduleName() -> String? {
        if let modinfo = file.section(named: ".modinfo"), let data = try? file.data(of: modinfo) {
            for entry in data.bytes.split(separator: 0) {
                let text = String(decoding: entry, as: UTF8.self)
                if text.hasPrefix("name=") { return String(text.dropFirst(5)) }
            }
        }
        var name = Substring(file.path.split(separator: "/").last ?? "")
        for suffix in [".xz", ".zst", ".gz"] where name.hasSuffix(suffix) { name = name.dropLast(suffix.count) }
        guard name.hasSuffix(".ko") else { return nil }
        return name.dropLast(3).replacingOccurrences(of: "-", with: "_")
    }

    /// The kernel release a module was built for (first word of `vermagic=`), or nil.
    func vermagicRelease() -> String? {
        guard let modinfo = file.section(named: ".modinfo"), let data = try? file.data(of: modinfo) else { return nil }
        for entry in data.bytes.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            if text.hasPrefix("vermagic=") { return text.dropFirst(9).split(separator: " ").first.map(String.init) }
        }
        return nil
    }
}

extension Substring {
    fileprivate func replacingOccurrences(of a: String, with b: String) -> String {
        String(self).split(separator: Character(a), omittingEmptySubsequences: false).joined(separator: b)
    }
}
