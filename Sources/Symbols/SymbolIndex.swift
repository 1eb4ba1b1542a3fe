import ELF

/// Name → symbols and address → containing symbol, over one list of symbols (a kallsyms, a
/// System.map, an ELF file's symbol tables).
///
/// Names are not unique: static functions in different files (or modules) share names. Lookups
/// number the symbols of one name 1, 2, ... in address order (`name/N`), and can narrow by module.
///
/// Sizes: ELF gives them; kallsyms and System.map do not, so a symbol without a size is taken to
/// extend up to the next higher symbol of the same module (and, for relocatable objects, of the
/// same section). The last symbol of a module keeps no size and only contains its own address.
/// Absolute symbols (`A`, `a`) are numbers, not addresses: they can be found by name only.
public struct SymbolIndex: Sendable {
    /// Every symbol in the order given, sizes filled in where they were inferred.
    public let records: [SymbolRecord]
    /// Which records came with a size (ELF) rather than an inferred one: a known size is a
    /// stronger claim when two symbols could contain an address.
    private let sizeKnown: [Bool]
    /// Name → the symbols of that name in address order.
    private let names: NameTable
    /// One address space per section name (nil: absolute addresses, i.e. everything but the
    /// symbols of relocatable objects).
    private let spaces: [String?: AddressSpace]
    /// For a linked ELF file: its allocated sections, sorted. Addresses outside all of them have no
    /// symbol. Empty: no such limit (kallsyms, System.map, relocatable objects).
    var regions: [Range<UInt64>] = []

    public var count: Int { records.count }

    public init(_ symbols: [SymbolRecord]) {
        // Take the caller's array rather than share it: sharing would copy all of it on the first write.
        var records = consume symbols
        let n = records.count

        // One pass over the (80-byte) records gathers what the later passes need into small
        // arrays: at 200k symbols every extra pass over the records costs a millisecond.
        var addresses = [UInt64](repeating: 0, count: n)
        var facts = [Facts](repeating: Facts(), count: n)
        var anySection = false
        records.withUnsafeBufferPointer { r in
            for i in 0..<n {
                addresses[i] = r[i].address
                let f = Facts(absolute: r[i].isAbsolute, function: r[i].isFunction, sizeKnown: r[i].size != nil,
                              inModule: r[i].module != nil, inSection: r[i].section != nil)
                if f.inSection { anySection = true }
                facts[i] = f
            }
        }

        // Address order, ties in input order: this numbers same-name symbols and drives inference.
        // kallsyms lists the core kernel sorted and each module unsorted: the sort finds the runs.
        var order = [Int32](unsafeUninitializedCapacity: n) { buffer, initialized in
            for i in 0..<n { buffer[i] = Int32(i) }
            initialized = n
        }
        addresses.withUnsafeBufferPointer { a in
            if !(0..<max(n - 1, 0)).allSatisfy({ a[$0] <= a[$0 + 1] }) {
                order.sort { x, y in
                    let p = a[Int(x)], q = a[Int(y)]
                    return p != q ? p < q : x < y
                }
            }
        }

        Self.inferSizes(&records, order: order, addresses: addresses, facts: facts)
        self.names = NameTable(records: records, order: order)

        // Address tables: absolute symbols are left out.
        var spaceMembers: [String?: [Int32]] = [:]
        if anySection {
            for i in order where !facts[Int(i)].absolute {
                spaceMembers[records[Int(i)].section, default: []].append(i)
            }
        } else {
            spaceMembers[nil] = order.filter { !facts[Int($0)].absolute }
        }
        var spaces: [String?: AddressSpace] = [:]
        for (section, members) in spaceMembers {
            spaces[section] = AddressSpace(members: members, addresses: addresses, facts: facts)
        }

        self.records = records
        self.sizeKnown = facts.map { $0.sizeKnown }
        self.spaces = spaces
    }

    /// Per record, what the index passes look at. Plain Bools rather than an OptionSet: the
    /// generic SetAlgebra calls made debug builds (what `swift test` runs) five times slower.
    struct Facts: Sendable {
        var absolute = false
        var function = false
        var sizeKnown = false
        var inModule = false
        var inSection = false
    }

    /// A run of addresses that size inference stays within: one module, one section.
    private struct RunKey: Hashable {
        var module: String?
        var section: String?
    }

    /// Gives each symbol without a size the distance to the next higher address in its module
    /// (and section). Walking down the address order, it keeps for each module the lowest address
    /// seen so far and the next higher one.
    private static func inferSizes(_ records: inout [SymbolRecord], order: [Int32], addresses: [UInt64], facts: [Facts]) {
        var runIDs: [RunKey: Int] = [:]
        var lastKey = RunKey(module: nil, section: nil), lastID = 0
        var lowest: [UInt64] = [.max]          // per run id; id 0 is the core kernel or a program
        var nextHigher: [UInt64?] = [nil]
        for i in order.reversed() {
            let k = Int(i)
            let f = facts[k]
            guard !f.sizeKnown, !f.absolute else { continue }
            var id = 0
            if f.inModule || f.inSection {
                let key = RunKey(module: records[k].module, section: records[k].section)
                if key == lastKey {
                    id = lastID
                } else {
                    if let known = runIDs[key] {
                        id = known
                    } else {
                        id = lowest.count
                        runIDs[key] = id
                        lowest.append(.max)
                        nextHigher.append(nil)
                    }
                    lastKey = key
                    lastID = id
                }
            }
            let address = addresses[k]
            if address < lowest[id] {
                if lowest[id] != .max { nextHigher[id] = lowest[id] }
                lowest[id] = address
            }
            if let higher = nextHigher[id] {
                records[k].size = higher - address
            }
        }
    }

    // MARK: By name

    /// Every symbol with this name, in address order (so `name/N` is element N-1).
    public func symbols(named name: String) -> [SymbolRecord] {
        var result: [SymbolRecord] = []
        var i = names.first(named: name, in: records)
        while i >= 0 {
            result.append(records[Int(i)])
            i = names.next[Int(i)]
        }
        return result
    }

    /// The one symbol meant by `name`, `name [module]` or `name/N` (N counts all symbols of that
    /// name from 1, in address order, whatever their module). Throws when none matches or when
    /// several do; the ambiguity error lists each candidate as `name/N at 0x... [module]`.
    ///
    /// Module names compare with `-` and `_` alike (the kernel turns `nfs-layout` into
    /// `nfs_layout`); `vmlinux` means the core kernel.
    public func resolve(name: String, module: String? = nil, ordinal: Int? = nil) throws(SymbolError) -> SymbolRecord {
        let all = symbols(named: name)
        if let ordinal {
            guard ordinal >= 1, ordinal <= all.count else {
                if all.isEmpty { throw .notFound(name: name, module: module, elsewhere: []) }
                throw .ordinalOutOfRange(name: name, ordinal: ordinal, count: all.count)
            }
            let pick = all[ordinal - 1]
            if let module, !Self.moduleMatches(pick.module, module) {
                throw .moduleMismatch(name: name, ordinal: ordinal, expected: module, found: pick.module)
            }
            return pick
        }
        let numbered = all.enumerated().filter { module == nil || Self.moduleMatches($0.element.module, module!) }
        if numbered.count == 1 { return numbered[0].element }
        if numbered.isEmpty {
            throw .notFound(name: name, module: module,
                            elsewhere: all.enumerated().map { Self.candidate(name, $0.offset + 1, $0.element, numbered: all.count > 1) })
        }
        throw .ambiguous(name: name, module: module,
                         candidates: numbered.map { Self.candidate(name, $0.offset + 1, $0.element, numbered: true) })
    }

    /// `nfs_flock/2 at 0xffffffffc03b2260 [nfs]`: what a user can type to pick this one.
    static func candidate(_ name: String, _ ordinal: Int, _ record: SymbolRecord, numbered: Bool) -> String {
        var text = numbered ? "\(name)/\(ordinal)" : name
        text += " at " + Hex.address(record.address)
        if let section = record.section { text += " (\(section))" }
        if let module = record.module { text += " [\(module)]" }
        return text
    }

    static func moduleMatches(_ actual: String?, _ wanted: String) -> Bool {
        guard let actual else { return wanted == "vmlinux" }
        if actual == wanted { return true }
        return actual.utf8.elementsEqual(wanted.utf8, by: { a, b in
            a == b || (a == UInt8(ascii: "_") && b == UInt8(ascii: "-")) || (a == UInt8(ascii: "-") && b == UInt8(ascii: "_"))
        })
    }

    // MARK: By address

    /// The symbol containing `address` and the offset into it: a symbol of known size contains
    /// [address, address+size); one without, up to the next symbol of its module. Aliases at the
    /// same address prefer a known size, then code, then global symbols, then the first listed.
    /// `section` picks the section of a relocatable object (addresses are then section-relative).
    public func symbolize(_ address: UInt64) -> (symbol: SymbolRecord, offset: UInt64)? {
        symbolize(address, section: nil)
    }

    public func symbolize(_ address: UInt64, section: String?) -> (symbol: SymbolRecord, offset: UInt64)? {
        guard inRegions(address, section: section),
              let i = spaces[section]?.all.lookup(address, records: records, sizeKnown: sizeKnown) else { return nil }
        return (records[Int(i)], address - records[Int(i)].address)
    }

    private func inRegions(_ address: UInt64, section: String?) -> Bool {
        guard section == nil, !regions.isEmpty else { return true }
        // Last region starting at or below the address.
        var low = 0, high = regions.count
        while low < high {
            let mid = (low + high) / 2
            if regions[mid].lowerBound <= address { low = mid + 1 } else { high = mid }
        }
        return low > 0 && regions[low - 1].contains(address)
    }

    /// The function containing `address` (data symbols are ignored).
    public func function(containing address: UInt64) -> SymbolRecord? {
        function(containing: address, section: nil)
    }

    public func function(containing address: UInt64, section: String?) -> SymbolRecord? {
        guard inRegions(address, section: section),
              let i = spaces[section]?.functions.lookup(address, records: records, sizeKnown: sizeKnown) else { return nil }
        return records[Int(i)]
    }
}

/// The located symbols of one section (or of the absolute address space), sorted by address.
struct AddressSpace: Sendable {
    var all: AddressTable
    var functions: AddressTable

    init(members: [Int32], addresses: [UInt64], facts: [SymbolIndex.Facts]) {
        all = AddressTable(members: members, addresses: addresses, facts: facts)
        functions = AddressTable(members: members.filter { facts[Int($0)].function },
                                 addresses: addresses, facts: facts)
    }
}

struct AddressTable: Sendable {
    /// Sorted ascending; `members[k]` is the record at `addresses[k]`.
    let addresses: [UInt64]
    let members: [Int32]
    /// False for kallsyms and System.map: every size is inferred, so the first hit is the answer.
    let hasKnownSizes: Bool

    /// How many address groups to walk back looking for an enclosing symbol of known size (an
    /// ELF function around a zero-size label). Bounded so a lookup stays cheap.
    private static let walkLimit = 64

    init(members: [Int32], addresses: [UInt64], facts: [SymbolIndex.Facts]) {
        self.members = members
        self.addresses = members.map { addresses[Int($0)] }
        self.hasKnownSizes = members.contains { facts[Int($0)].sizeKnown }
    }

    func lookup(_ address: UInt64, records: [SymbolRecord], sizeKnown: [Bool]) -> Int32? {
        // First index whose address is above `address`.
        var low = 0, high = addresses.count
        while low < high {
            let mid = (low + high) / 2
            if addresses[mid] <= address { low = mid + 1 } else { high = mid }
        }
        var k = low - 1
        var fallback: Int32? = nil        // highest containing symbol whose size was only inferred
        var groups = 0
        while k >= 0 && groups < Self.walkLimit {
            let groupAddress = addresses[k]
            var best: Int32? = nil
            var sawKnownMiss = false
            while k >= 0 && addresses[k] == groupAddress {
                let m = Int(members[k])
                if Self.contains(records[m], address) {
                    if best == nil || Self.prefer(records[m], sizeKnown[m], over: records[Int(best!)], sizeKnown[Int(best!)]) {
                        best = Int32(m)
                    }
                } else if sizeKnown[m] {
                    sawKnownMiss = true
                }
                k -= 1
            }
            if let best {
                if sizeKnown[Int(best)] { return best }
                if fallback == nil { fallback = best }
                if !hasKnownSizes { return fallback }
            } else if sawKnownMiss {
                // A symbol of known size ends before `address`: we are in padding between symbols.
                break
            }
            groups += 1
        }
        return fallback
    }

    @inline(__always)
    static func contains(_ r: SymbolRecord, _ address: UInt64) -> Bool {
        guard address >= r.address else { return false }
        let offset = address - r.address
        guard let size = r.size else { return offset == 0 }
        return offset < size || offset == 0
    }

    /// Among aliases: known size, then code, then global (uppercase), then input order (callers
    /// visit later-listed ones first, so ties go to the earlier index).
    static func prefer(_ a: SymbolRecord, _ aKnown: Bool, over b: SymbolRecord, _ bKnown: Bool) -> Bool {
        if aKnown != bKnown { return aKnown }
        if a.isFunction != b.isFunction { return a.isFunction }
        if a.isGlobal != b.isGlobal { return a.isGlobal }
        return true
    }
}

/// Name → symbols, as an open-addressing hash table over the names' UTF-8 bytes. Swift's
/// `Dictionary<String, _>` costs about 250 ns an insert (SipHash over a normalized string); this
/// costs a fraction, which matters for a 200k-symbol kallsyms.
struct NameTable: Sendable {
    /// Power-of-two table of the first (lowest-address) record of each name; -1 is empty.
    private let slots: [Int32]
    /// Per record: the next record of the same name in address order, -1 at the end.
    let next: [Int32]
    private let hashes: [UInt32]

    init(records: [SymbolRecord], order: [Int32]) {
        let n = records.count
        var capacity = 16
        while capacity < 2 * n { capacity <<= 1 }
        let mask = capacity - 1
        let hashes = records.map { Self.hash($0.name) }
        var slots = [Int32](repeating: -1, count: capacity)
        var next = [Int32](repeating: -1, count: n)
        // Backwards through the address order, each record becomes its name's new first one.
        for i in order.reversed() {
            let h = hashes[Int(i)]
            var s = Int(h) & mask
            while true {
                let head = slots[s]
                if head < 0 { slots[s] = i; break }
                if hashes[Int(head)] == h && records[Int(head)].name == records[Int(i)].name {
                    next[Int(i)] = head
                    slots[s] = i
                    break
                }
                s = (s + 1) & mask
            }
        }
        self.slots = slots
        self.next = next
        self.hashes = hashes
    }

    /// The lowest-address record with this name, or -1.
    func first(named name: String, in records: [SymbolRecord]) -> Int32 {
        let h = Self.hash(name)
        let mask = slots.count - 1
        var s = Int(h) & mask
        while true {
            let head = slots[s]
            if head < 0 { return -1 }
            if hashes[Int(head)] == h && records[Int(head)].name == name { return head }
            s = (s + 1) & mask
        }
    }

    static func hash(_ name: String) -> UInt32 {
        if let h = name.utf8.withContiguousStorageIfAvailable(hash) { return h }
        return Array(name.utf8).withUnsafeBufferPointer(hash)
    }

    /// A multiply-xorshift hash, eight bytes at a time.
    static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        let k: UInt64 = 0x9E37_79B9_7F4A_7C15
        var h = UInt64(bytes.count) &* k
        guard let base = bytes.baseAddress else { return UInt32(truncatingIfNeeded: h >> 32) }
        let raw = UnsafeRawPointer(base)
        var i = 0
        while i + 8 <= bytes.count {
            h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* k
            h ^= h >> 29
            i += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < bytes.count {
            tail |= UInt64(bytes[i]) << shift
            shift += 8
            i += 1
        }
        h = (h ^ tail) &* k
        h ^= h >> 32
        h = h &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 29
        return UInt32(truncatingIfNeeded: h)
    }
}
