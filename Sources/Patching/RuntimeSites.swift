import ELF
import Symbols

/// Every byte range of a file's code (and data) that is rewritten when the file is loaded or while it
/// runs: relocations, ftrace call sites, return thunks, retpolines, static calls and keys,
/// alternatives, paravirt sites, lock prefixes, KASLR fields.
///
/// Live bytes equal file bytes everywhere else, so verification compares bytes under `mask` and
/// `unexplainedDifferences` checks a dump of live code against its file.
///
/// - Relocatable objects (`.o`, `.ko`): every relocation of an allocated section (its field size),
///   and the sites of the kernel's tables (`__mcount_loc`, `.return_sites`, ...) located through each
///   table's own `.rela.<table>` entries.
/// - Linked images (executables, shared objects, an unstripped vmlinux): dynamic relocations, and the
///   kernel's tables between their bounding symbols when `.symtab` has them.
/// - A stripped vmlinux: `init(vmlinux:symbols:)` with symbols from System.map or kallsyms, plus the
///   KASLR relocation table appended to the decompressed image.
public struct RuntimeSites: Sendable {
    /// The file the sites were read from.
    public let file: String
    /// Table entries that named no byte of the file (undefined symbol, address outside every
    /// section, NULL pointer): they cannot explain a difference, and are counted here rather than lost.
    public let skippedEntries: [RuntimeSite.Table: Int]

    /// Sites of one section, sorted by offset; `longest` bounds how far back an overlapping site starts.
    struct SectionSites: Sendable {
        var sites: [RuntimeSite] = []
        var longest = 0
    }

    private let bySection: [Int: SectionSites]

    init(file: String, sites: [RuntimeSite], skipped: [RuntimeSite.Table: Int]) {
        self.file = file
        self.skippedEntries = skipped
        var grouped: [Int: SectionSites] = [:]
        for site in sites {
            grouped[site.section, default: SectionSites()].sites.append(site)
        }
        for key in grouped.keys {
            grouped[key]!.sites.sort { ($0.offset, $0.length) < ($1.offset, $1.length) }
            grouped[key]!.longest = grouped[key]!.sites.reduce(0) { max($0, $1.length) }
        }
        bySection = grouped
    }

    /// Reads the sites of a relocatable object, a linked executable or shared object, or an
    /// unstripped vmlinux (tables found through `.symtab`).
    public init(object: ELFFile) throws(RuntimeSitesError) {
        var collector = RuntimeSiteCollector(file: object)
        if object.header.type == .relocatable {
            try collector.addObjectRelocations()
            try collector.addObjectTables()
        } else {
            try collector.addLinkedRelocations()
            try collector.addLinkedTablesFromSymbolTable()
        }
        try collector.addTrampolinesFromSymbolTable()
        self.init(file: object.path, sites: collector.sites, skipped: collector.skipped)
    }

    /// Reads the sites of a stripped vmlinux (decompressed from the bzImage, KASLR relocation table
    /// still appended), its tables found through `symbols` (System.map, or a live kallsyms with
    /// `slide` the KASLR offset of its addresses; module symbols are ignored).
    public init(vmlinux: ELFFile, symbols: SymbolIndex, slide: Int64 = 0) throws(RuntimeSitesError) {
        var collector = RuntimeSiteCollector(file: vmlinux)
        let unslide = { (address: UInt64) in address &- UInt64(bitPattern: slide) }
        try collector.addLinkedTables { name in
            symbols.symbols(named: name).first { $0.module == nil }.map { unslide($0.address) }
        }
        for record in symbols.records where record.module == nil && record.name.hasPrefix("__SCT__") {
            collector.addTrampoline(at: unslide(record.address))
        }
        try collector.addKASLRRelocations()
        self.init(file: vmlinux.path, sites: collector.sites, skipped: collector.skipped)
    }

    // MARK: Queries

    /// Number of sites in all sections.
    public var count: Int { bySection.values.reduce(0) { $0 + $1.sites.count } }

    /// Number of sites per table, over all sections.
    public var counts: [RuntimeSite.Table: Int] {
        var result: [RuntimeSite.Table: Int] = [:]
        for group in bySection.values { for site in group.sites { result[site.table, default: 0] += 1 } }
        return result
    }

    /// The sites in `section`, sorted by offset.
    public func sites(in section: Section) -> [RuntimeSite] {
        bySection[section.index]?.sites ?? []
    }

    /// The sites in `section` that share at least one byte with `range`, sorted by offset.
    public func sites(in section: Section, overlapping range: Range<UInt64>) -> [RuntimeSite] {
        var result: [RuntimeSite] = []
        forEachSite(in: section.index, overlapping: range) { result.append($0) }
        return result
    }

    /// One byte per byte of `range`: 0x00 where the bytes may be rewritten at run time, 0xff where the
    /// file's byte must be found live (the `Hunk.mask` convention).
    public func mask(section: Section, range: Range<UInt64>) -> [UInt8] {
        var mask = [UInt8](repeating: 0xff, count: Int(range.upperBound - range.lowerBound))
        mask.withUnsafeMutableBufferPointer { out in
            forEachSite(in: section.index, overlapping: range) { site in
                let from = max(site.offset, range.lowerBound) - range.lowerBound
                let to = min(site.offset + UInt64(site.length), range.upperBound) - range.lowerBound
                for i in Int(from)..<Int(to) { out[i] = 0 }
            }
        }
        return mask
    }

    /// The site that explains why the byte at `offset` of `section` may differ live, or nil when the
    /// byte must equal the file's. A table's site wins over the plain relocation inside it (the
    /// ftrace site names the whole call, the relocation only its operand).
    public func explain(section: Section, offset: UInt64) -> RuntimeSite? {
        var best: RuntimeSite?
        forEachSite(in: section.index, overlapping: offset..<offset + 1) { site in
            if best == nil || (best!.table == .relocation && site.table != .relocation) { best = site }
        }
        return best
    }

    /// Positions (indices into the buffers) where `liveBytes` differs from `fileBytes` and no site
    /// explains it. Both buffers start at `startingAt` in `section`. Bytes present in only one buffer
    /// count as unexplained differences.
    public func unexplainedDifferences(fileBytes: some Collection<UInt8>, liveBytes: some Collection<UInt8>,
                                       section: Section, startingAt start: UInt64 = 0) -> [Int] {
        let file = Array(fileBytes), live = Array(liveBytes)
        let common = min(file.count, live.count)
        let mask = mask(section: section, range: start..<start + UInt64(common))
        var result: [Int] = []
        for i in 0..<common where file[i] != live[i] && mask[i] != 0 { result.append(i) }
        result.append(contentsOf: common..<max(file.count, live.count))
        return result
    }

    /// Calls `body` for each site of section `index` sharing a byte with `range`, in offset order.
    private func forEachSite(in index: Int, overlapping range: Range<UInt64>, _ body: (RuntimeSite) -> Void) {
        guard let group = bySection[index], !range.isEmpty else { return }
        let sites = group.sites
        // First site that may reach into the range: offset > lowerBound - longest.
        let earliest = range.lowerBound >= UInt64(group.longest) ? range.lowerBound - UInt64(group.longest) + 1 : 0
        var low = 0, high = sites.count
        while low < high {
            let mid = (low + high) / 2
            if sites[mid].offset < earliest { low = mid + 1 } else { high = mid }
        }
        var i = low
        while i < sites.count, sites[i].offset < range.upperBound {
            let site = sites[i]
            if site.offset + UInt64(site.length) > range.lowerBound { body(site) }
            i += 1
        }
    }
}
