/// What a relocated field, a direct branch or a RIP-relative operand points to, in terms that stay
/// equal when the code around it merely moves.
enum ObjectDiffTarget: Hashable, Sendable {
    /// A named symbol (not a section symbol) and the offset from it.
    case symbol(String, Int64)
    /// Inside a function or object of the file: the pair it belongs to (`UnitPairs` numbering, so
    /// both files agree) and the offset into it.
    case unit(Int, Int64)
    /// A string literal in a SHF_MERGE|SHF_STRINGS section: compared by content, so a string that
    /// merely moved is equal and a changed one is not.
    case string([UInt8])
    /// Somewhere in a section outside every symbol: compared after removing the section's common
    /// shift (`ObjectDiff` works it out over all such references).
    case anonymous(String, UInt64)
    /// An absolute value with no symbol.
    case address(UInt64)
}
