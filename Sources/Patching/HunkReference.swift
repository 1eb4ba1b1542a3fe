import ELF

/// Where a hunk's bytes are when no symbol names them: at the address a field of some code or data
/// refers to. `ObjectDiff` uses it for string literals, which live in unnamed, merged sections
/// (`.rodata.str1.1` of a module) whose live address only the code that uses them knows.
///
/// Resolving: read the field live at `symbol [module]/ordinal + field`, then
/// - `pc32`: address = field address + `bias` + sign-extended 32-bit value (x86-64 RIP-relative;
///   `bias` is the distance from the field to the end of its instruction),
/// - `abs32s`: address = sign-extended 32-bit value,
/// - `abs64`: address = the 64-bit value;
/// the hunk's bytes start `Hunk.offset` bytes after that address.
public struct HunkReference: Sendable, Hashable, Codable {
    public enum Encoding: String, Sendable, Hashable, Codable {
        case pc32, abs32s, abs64
    }
    public var symbol: String
    public var module: String?
    public var ordinal: Int?
    /// Offset of the field from the symbol's start.
    public var field: UInt64
    public var encoding: Encoding
    public var bias: Int64

    public init(symbol: String, module: String? = nil, ordinal: Int? = nil, field: UInt64, encoding: Encoding, bias: Int64 = 0) {
        self.symbol = symbol
        self.module = module
        self.ordinal = ordinal
        self.field = field
        self.encoding = encoding
        self.bias = bias
    }

    /// `*(nfs_flock [nfs]+0x20)`: the place the field refers to.
    public var location: String {
        var text = symbol
        if let ordinal { text += "/\(ordinal)" }
        if let module { text += " [\(module)]" }
        return "*(" + text + "+" + Hex.address(field) + ")"
    }

    /// The address the field refers to, given the field's live address and bytes.
    public func target(fieldAddress: UInt64, fieldBytes: [UInt8]) -> UInt64? {
        func word(_ n: Int) -> UInt64? {
            guard fieldBytes.count >= n else { return nil }
            var value: UInt64 = 0
            for i in (0..<n).reversed() { value = value << 8 | UInt64(fieldBytes[i]) }
            return value
        }
        switch encoding {
        case .pc32:
            guard let raw = word(4) else { return nil }
            return fieldAddress &+ UInt64(bitPattern: bias) &+ UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: raw)))
        case .abs32s:
            guard let raw = word(4) else { return nil }
            return UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: raw)))
        case .abs64:
            return word(8)
        }
    }

    enum CodingKeys: String, CodingKey { case symbol, module, ordinal, field, encoding, bias }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        symbol = try c.decode(String.self, forKey: .symbol)
        module = try c.decodeIfPresent(String.self, forKey: .module)
        ordinal = try c.decodeIfPresent(Int.self, forKey: .ordinal)
        field = try HexCoding.decodeNumber(c, .field)
        encoding = try c.decode(Encoding.self, forKey: .encoding)
        bias = try c.decodeIfPresent(Int64.self, forKey: .bias) ?? 0
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(symbol, forKey: .symbol)
        try c.encodeIfPresent(module, forKey: .module)
        try c.encodeIfPresent(ordinal, forKey: .ordinal)
        try c.encode(Hex.address(field), forKey: .field)
        try c.encode(encoding, forKey: .encoding)
        if bias != 0 { try c.encode(bias, forKey: .bias) }
    }
}
