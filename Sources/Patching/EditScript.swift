/// The shortest way to turn one sequence into another by deleting and inserting elements
/// (Myers' O(ND) algorithm), used to line up the instructions of two versions of a function.
struct EditScript {
    enum Step: Equatable {
        case keep(Int, Int)
        case delete(Int)
        case insert(Int)
    }

    let steps: [Step]

    init<T: Hashable>(_ a: [T], _ b: [T]) {
        let n = a.count, m = b.count
        let maximum = n + m
        guard maximum > 0 else { steps = []; return }
        let offset = maximum
        var frontier = [Int](repeating: 0, count: 2 * maximum + 2)
        // One saved frontier per edit distance, to walk the path back.
        var trace: [[Int]] = []
        var found = false
        for d in 0...maximum {
            trace.append(frontier)
            var k = -d
            while k <= d {
                var x: Int
                if k == -d || (k != d && frontier[offset + k - 1] < frontier[offset + k + 1]) {
                    x = frontier[offset + k + 1]
                } else {
                    x = frontier[offset + k - 1] + 1
                }
                var y = x - k
                while x < n, y < m, a[x] == b[y] { x += 1; y += 1 }
                frontier[offset + k] = x
                if x >= n, y >= m { found = true; break }
                k += 2
            }
            if found { break }
        }
        // Walk back from (n, m).
        var result: [Step] = []
        var x = n, y = m
        for d in stride(from: trace.count - 1, through: 0, by: -1) {
            let v = trace[d]
            let k = x - y
            let previousK: Int
            if k == -d || (k != d && v[offset + k - 1] < v[offset + k + 1]) { previousK = k + 1 } else { previousK = k - 1 }
            let previousX = d == 0 ? 0 : v[offset + previousK]
            let previousY = previousX - previousK
            while x > previousX, y > previousY, x > 0, y > 0 {
                x -= 1; y -= 1
                result.append(.keep(x, y))
            }
            if d == 0 { break }
            if x == previousX { y -= 1; result.append(.insert(y)) } else { x -= 1; result.append(.delete(x)) }
        }
        while x > 0, y > 0 { x -= 1; y -= 1; result.append(.keep(x, y)) }
        steps = result.reversed()
    }
}
