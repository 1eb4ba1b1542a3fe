import ELF
import Symbols
import Targets

/// A hunk placed on one target: its live address and the function it lies in.
public struct ResolvedHunk: Sendable, Hashable {
    public var hunk: Hunk
    public var address: UInt64
    /// The function symbol containing the hunk, with its live start address; nil for bare addresses
    /// that no symbol covers.
    public var function: SymbolRecord?
    /// Bytes from the function's start to the hunk's start.
    public var functionOffset: UInt64? { function.map { address - $0.address } }

    public var range: Range<UInt64> { address..<(address + UInt64(hunk.expected.count)) }

    /// The smallest range holding every byte that differs between expected and replacement:
    /// the only bytes the engine writes. A flip of `74 39` to `75 39` writes one byte.
    public var changedRange: Range<Int> {
        let e = hunk.expected, r = hunk.replacement
        guard let first = e.indices.first(where: { e[$0] != r[$0] }),
              let last = e.indices.last(where: { e[$0] != r[$0] }) else { return 0..<0 }
        return first..<(last + 1)
    }

    /// Places `hunk` through `symbols`: `symbol+offset`, its absolute address, or (for string
    /// literals and other unnamed data) the address a live field refers to, read from `target`.
    public static func resolve(_ hunk: Hunk, symbols: SymbolIndex?, target: MemoryTarget? = nil) throws -> ResolvedHunk {
        if hunk.symbol == nil, let reference = hunk.reference {
            guard let symbols else { throw PatchError.noSymbols(location: hunk.location) }
            let base = try symbols.resolve(name: reference.symbol, module: reference.module, ordinal: reference.ordinal)
            let fieldAddress = base.address &+ reference.field
            let width = reference.encoding == .abs64 ? 8 : 4
            guard let target else { throw PatchError.noSymbols(location: hunk.location) }
            let field = try target.read(at: fieldAddress, count: width)
            guard let address = reference.target(fieldAddress: fieldAddress, fieldBytes: field) else {
                throw PatchError.noSymbols(location: hunk.location)
            }
            return ResolvedHunk(hunk: hunk, address: address &+ hunk.offset, function: nil)
        }
        if let name = hunk.symbol {
            guard let symbols else { throw PatchError.noSymbols(location: hunk.location) }
            let symbol = try symbols.resolve(name: name, module: hunk.module, ordinal: hunk.ordinal)
            let address = symbol.address &+ hunk.offset
            let function = symbol.isFunction ? symbol : symbols.function(containing: address)
            return ResolvedHunk(hunk: hunk, address: address, function: function)
        }
        let address = (hunk.address ?? 0) &+ hunk.offset
        return ResolvedHunk(hunk: hunk, address: address, function: symbols?.function(containing: address))
    }
}
