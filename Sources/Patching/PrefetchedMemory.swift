import Targets

/// The reads of one preflight, fetched with one `read(ranges:)`: on a target that stops to read
/// (a VM behind a gdb stub) that is one short stop instead of one per check. Reads inside a fetched
/// range are served from it; any other read goes to the target.
final class PrefetchedMemory {
    let target: MemoryTarget
    private var blocks: [MemoryBlock] = []

    /// Fetches `ranges` (empty ones and duplicates dropped) in one call.
    init(target: MemoryTarget, ranges: [Range<UInt64>]) throws {
        self.target = target
        var wanted: [Range<UInt64>] = []
        for range in ranges where !range.isEmpty && !wanted.contains(where: { $0.contains(range.lowerBound) && range.upperBound <= $0.upperBound }) {
            wanted.append(range)
        }
        guard !wanted.isEmpty else { return }
        blocks = zip(wanted, try target.read(ranges: wanted)).map { MemoryBlock(address: $0.lowerBound, bytes: $1) }
    }

    func read(at address: UInt64, count: Int) throws -> [UInt8] {
        let end = address + UInt64(count)
        if let block = blocks.first(where: { $0.address <= address && end <= $0.range.upperBound }) {
            let start = Int(address - block.address)
            return Array(block.bytes[start..<start + count])
        }
        return try target.read(at: address, count: count)
    }
}
