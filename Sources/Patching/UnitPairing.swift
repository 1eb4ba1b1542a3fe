/// Which function or object of the original file corresponds to which of the patched file.
///
/// By name and kind; names shared by several static units (nfs.ko has no STT_FILE symbols to tell
/// them apart) are paired in order when both files have as many, else first by section and size,
/// then in order.
struct UnitPairing {
    /// (original unit index, patched unit index), in the original's order.
    private(set) var pairs: [(Int, Int)] = []
    private(set) var removedA: [Int] = []
    private(set) var addedB: [Int] = []
    /// Unit index → pair number; unpaired units get numbers after the pairs'.
    private(set) var pairOfA: [Int]
    private(set) var pairOfB: [Int]
    /// Pair number → name.
    private(set) var names: [String] = []

    private struct Key: Hashable {
        var name: String
        var kind: ObjectDiff.Unit.Kind
    }

    init(_ a: [ObjectDiff.Unit], _ b: [ObjectDiff.Unit]) {
        var inB: [Key: [Int]] = [:]
        for (j, unit) in b.enumerated() { inB[Key(name: unit.name, kind: unit.kind), default: []].append(j) }
        var inA: [Key: [Int]] = [:]
        var order: [Key] = []
        for (i, unit) in a.enumerated() {
            let key = Key(name: unit.name, kind: unit.kind)
            if inA[key] == nil { order.append(key) }
            inA[key, default: []].append(i)
        }
        var pairs: [(Int, Int)] = []
        var removed: [Int] = []
        for key in order {
            let la = inA[key]!, lb = inB.removeValue(forKey: key) ?? []
            if la.count == lb.count {
                pairs += zip(la, lb).map { ($0, $1) }
                continue
            }
            var free = lb
            var left: [Int] = []
            for i in la {
                if let k = free.firstIndex(where: { b[$0].section == a[i].section && b[$0].size == a[i].size }) {
                    pairs.append((i, free.remove(at: k)))
                } else {
                    left.append(i)
                }
            }
            pairs += zip(left, free).map { ($0, $1) }
            removed += left.dropFirst(free.count)
            if free.count > left.count { inB[key] = Array(free.dropFirst(left.count)) }
        }
        pairs.sort { $0.0 < $1.0 }
        self.pairs = pairs
        removedA = removed.sorted()
        addedB = inB.values.flatMap { $0 }.sorted()

        pairOfA = [Int](repeating: -1, count: a.count)
        pairOfB = [Int](repeating: -1, count: b.count)
        for (k, (i, j)) in pairs.enumerated() {
            pairOfA[i] = k
            pairOfB[j] = k
            names.append(a[i].displayName)
        }
        for i in removedA { pairOfA[i] = names.count; names.append(a[i].displayName) }
        for j in addedB { pairOfB[j] = names.count; names.append(b[j].displayName) }
    }
}
