import Symbols
/// The guest's /proc/kallsyms as moved over the bulk channel, cached per boot and module set.
public struct Kallsyms: Sendable {
    /// The cached copy in the run folder.
    public var path: String
    public var bootID: String
    public var text: [UInt8]
    /// True when this came from the cache rather than a fresh transfer.
    public var cached: Bool

    /// The symbols, indexed (module symbols carry their `[module]`).
    public func index() throws -> SymbolIndex {
        SymbolIndex(try KallsymsParser.parse(text, file: path))
    }

    public var lineCount: Int {
        text.withUnsafeBufferPointer { buffer in
            var count = 0
            for byte in buffer where byte == 0x0A { count += 1 }
            return count
        }
    }
}
