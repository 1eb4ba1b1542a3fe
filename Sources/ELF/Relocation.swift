/// One entry of a SHT_REL or SHT_RELA section, with its symbol resolved.
public struct Relocation: Sendable, Hashable {
    /// `r_offset`: section-relative in relocatable files, a virtual address otherwise.
    public var offset: UInt64
    public var type: UInt32
    /// `R_X86_64_PLT32`, as readelf prints it (see `RelocationType.name(_:machine:)`).
    public var typeName: String
    public var symbolIndex: UInt32
    /// The symbol's name; for STT_SECTION symbols, the name of the section they stand for.
    public var symbolName: String
    public var symbolValue: UInt64
    public var symbolSectionIndex: UInt32
    public var symbolType: SymbolType
    /// Explicit (RELA), or read from the relocated field (REL) when its size is known, else 0.
    public var addend: Int64
    public var hasExplicitAddend: Bool
    /// Bytes the relocation writes at `offset`, where known.
    public var fieldSize: Int?
    /// The SHT_REL/SHT_RELA section this entry comes from.
    public var relocationSectionIndex: Int

    public init(offset: UInt64, type: UInt32, typeName: String, symbolIndex: UInt32, symbolName: String,
                symbolValue: UInt64, symbolSectionIndex: UInt32, symbolType: SymbolType, addend: Int64,
                hasExplicitAddend: Bool, fieldSize: Int?, relocationSectionIndex: Int) {
        self.offset = offset
        self.type = type
        self.typeName = typeName
        self.symbolIndex = symbolIndex
        self.symbolName = symbolName
        self.symbolValue = symbolValue
        self.symbolSectionIndex = symbolSectionIndex
        self.symbolType = symbolType
        self.addend = addend
        self.hasExplicitAddend = hasExplicitAddend
        self.fieldSize = fieldSize
        self.relocationSectionIndex = relocationSectionIndex
    }
}
