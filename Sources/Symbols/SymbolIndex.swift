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
    /// Which records' sizes were inferred rather than known: a known size is a stronger claim
    /// when two symbols could contain an address.
    private let sizeInferred: [Bool]
    /// First record (lowest address) of each name; `nextOfName` chains the rest in address order.
    private let firstOfName: [String: Int32]
    private let nextOfName: [Int32]
    /// One address space per section name (nil: absolute addresses, i.e. everything but the
    /// symbols of relocatable objects).
    private let spaces: [String?: AddressSpace]

    public var count: Int { records.count }

    public init(_ symbols: [SymbolRecord]) {
        var records = symbols
        let n = records.count

        // Address order, ties in input order: this numbers same-name symbols and drives inference.
        var order = [Int32](unsafeUninitializedCapacity: n) { buffer, initialized in
            for i in 0..<n { buffer[i] = Int32(i) }
            initialized = n
        }
        let sorted = records.withUnsafeBufferPointer { r in
            (1..<max(n, 1)).allSatisfy { r[$0 - 1].address <= r[$0].address }
        }
        if !sorted {
            records.withUnsafeBufferPointer { r in
                order.sort { a, b in
                    let x = r[Int(a)].address, y = r[Int(b)].address
                    return x != y ? x < y : a < b
                }
            }
        }

        // Name chains, built backwards so each chain runs in address order.
        var firstOfName: [String: Int32] = [:]
        firstOfName.reserveCapacity(n)
        var nextOfName = [Int32](repeating: -1, count: n)
        for i in order.reversed() {
            Self.push(i, onto: &firstOfName[records[Int(i)].name, default: -1], next: &nextOfName)
        }

        // Size inference, per module: walking down the address order, remember for each module
        // the lowest address seen so far and the next higher one.
        var moduleIDs: [RunKey: Int] = [:]
        var lastKey = RunKey(module: nil, section: nil), lastID = 0
        var lowest: [UInt64] = [.max]          // per run id; id 0 is the core kernel or a program
        var nextHigher: [UInt64?] = [nil]
        var sizeInferred = [Bool](repeating: false, count: n)
        for i in order.reversed() {
            let r = records[Int(i)]
            guard !r.isAbsolute, r.size == nil else { continue }
            var id = 0
            if r.module != nil || r.section != nil {
                // Relocatable objects: each section is its own run of addresses.
                let key = RunKey(module: r.module, section: r.section)
                if key == lastKey {
                    id = lastID
                } else {
                    if let known = moduleIDs[key] {
                        id = known
                    } else {
                        id = lowest.count
                        moduleIDs[key] = id
                        lowest.append(.max)
                        nextHigher.append(nil)
                    }
                    lastKey = key
                    lastID = id
                }
            }
            if r.address < lowest[id] {
                if lowest[id] != .max { nextHigher[id] = lowest[id] }
                lowest[id] = r.address
            }
            if let higher = nextHigher[id] {
                records[Int(i)].size = higher - r.address
                sizeInferred[Int(i)] = true
            }
        }

        // Address tables: absolute symbols are left out.
        var spaceMembers: [String?: [Int32]] = [:]
        for i in order where !records[Int(i)].isAbsolute {
            spaceMembers[records[Int(i)].section, default: []].append(i)
        }
        var spaces: [String?: AddressSpace] = [:]
        for (section, members) in spaceMembers {
            spaces[section] = AddressSpace(members: members, records: records, sizeInferred: sizeInferred)
        }

        self.records = records
        self.sizeInferred = sizeInferred
        self.firstOfName = firstOfName
        self.nextOfName = nextOfName
        self.spaces = spaces
    }

    /// A run of addresses that size inference stays within: one module, one section.
    private struct RunKey: Hashable {
        var module: String?
        var section: String?
    }

    @inline(__always)
    private static func push(_ i: Int32, onto head: inout Int32, next: inout [Int32]) {
        next[Int(i)] = head
        head = i
    }

    // MARK: By name

    /// Every symbol with this name, in address order (so `name/N` is element N-1).
    public func symbols(named name: String) -> [SymbolRecord] {
        var result: [SymbolRecord] = []
        var i = firstOfName[name] ?? -1
        while i >= 0 {
            result.append(records[Int(i)])
            i = nextOfName[Int(i)]
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
        guard let i = spaces[section]?.all.lookup(address, records: records, sizeInferred: sizeInferred) else { return nil }
        return (records[Int(i)], address - records[Int(i)].address)
    }

    /// The function containing `address` (data symbols are ignored).
    public func function(containing address: UInt64) -> SymbolRecord? {
        function(containing: address, section: nil)
    }

    public func function(containing address: UInt64, section: String?) -> SymbolRecord? {
        guard let i = spaces[section]?.functions.lookup(address, records: records, sizeInferred: sizeInferred) else { return nil }
        return records[Int(i)]
    }
}

/// The located symbols of one section (or of the absolute address space), sorted by address.
struct AddressSpace: Sendable {
    var all: AddressTable
    var functions: AddressTable

    init(members: [Int32], records: [SymbolRecord], sizeInferred: [Bool]) {
        all = AddressTable(members: members, records: records, sizeInferred: sizeInferred)
        functions = AddressTable(members: members.filter { records[Int($0)].isFunction },
                                 records: records, sizeInferred: sizeInferred)
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

    init(members: [Int32], records: [SymbolRecord], sizeInferred: [Bool]) {
        self.members = members
        self.addresses = members.map { records[Int($0)].address }
        self.hasKnownSizes = members.contains { records[Int($0)].size != nil && !sizeInferred[Int($0)] }
    }

    func lookup(_ address: UInt64, records: [SymbolRecord], sizeInferred: [Bool]) -> Int32? {
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
                let m = members[k]
                let r = records[Int(m)]
                if Self.contains(r, address) {
                    if best == nil || Self.prefer(r, sizeInferred[Int(m)], over: records[Int(best!)], sizeInferred[Int(best!)]) {
                        best = m
                    }
                } else if r.size != nil && !sizeInferred[Int(m)] {
                    sawKnownMiss = true
                }
                k -= 1
            }
            if let best {
                if !sizeInferred[Int(best)] && records[Int(best)].size != nil { return best }
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
    static func prefer(_ a: SymbolRecord, _ aInferred: Bool, over b: SymbolRecord, _ bInferred: Bool) -> Bool {
        let aKnown = a.size != nil && !aInferred, bKnown = b.size != nil && !bInferred
        if aKnown != bKnown { return aKnown }
        if a.isFunction != b.isFunction { return a.isFunction }
        let aGlobal = a.kind.isUppercase, bGlobal = b.kind.isUppercase
        if aGlobal != bGlobal { return aGlobal }
        return true
    }
}
