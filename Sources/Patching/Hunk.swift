import ELF

/// One in-place change: at `symbol+offset`, the bytes `expected` become `replacement`.
///
/// Hunks name code by symbol, not by address, so that one bundle applies to every boot of the
/// same kernel whatever its KASLR slide or module load address. `address` is used only for
/// hunks composed by hand against an absolute address (`suture poke 0xffff...`).
public struct Hunk: Sendable, Hashable, Codable {
    /// The function (or data object) the hunk lies in.
    public var symbol: String?
    /// The module the symbol belongs to (`nfs`), nil for built-in kernel code or the main executable.
    public var module: String?
    /// Picks one of several symbols sharing `symbol`'s name (1-based, in address order): `name/N`.
    public var ordinal: Int?
    /// Byte offset from the symbol's start (or from `address`).
    public var offset: UInt64
    /// An absolute address, for hunks that name no symbol.
    public var address: UInt64?
    /// What must be there now.
    public var expected: [UInt8]
    /// What will be there after apply.
    public var replacement: [UInt8]
    /// Per byte of `expected`: 0xff compares the byte, 0x00 ignores it (the target rewrites it at
    /// boot or load time: relocations, ftrace NOPs, return thunks). Bits in between mask bits.
    /// nil means compare every byte.
    public var mask: [UInt8]?
    /// For data that no symbol names (a string literal in a module's `.rodata.str1.1`): the hunk
    /// lies `offset` bytes after the address that a field of the code refers to. `symbol` is nil
    /// then, so that a reader unaware of references resolves nothing rather than the wrong place.
    public var reference: HunkReference?

    public init(symbol: String?, module: String? = nil, ordinal: Int? = nil, offset: UInt64,
                address: UInt64? = nil, expected: [UInt8], replacement: [UInt8], mask: [UInt8]? = nil,
                reference: HunkReference? = nil) {
        self.symbol = symbol
        self.module = module
        self.ordinal = ordinal
        self.offset = offset
        self.address = address
        self.expected = expected
        self.replacement = replacement
        self.mask = mask
        self.reference = reference
    }

    /// `nfs_flock [nfs]+0x2f`, `name/2+0x10`, or `0xffffffff81000000+0x0`: the form AddressExpression
    /// parses. A hunk reached through a reference reads `*(modalias_show [virtio]+0xe)`: where the
    /// field at that place points, which only the live field's bytes (and the reference's encoding)
    /// tell, so it is for reading, not for AddressExpression; apply and status print the address.
    public var location: String {
        if symbol == nil, let reference { return reference.location + (offset == 0 ? "" : "+" + Hex.address(offset)) }
        guard let symbol else { return Hex.address(address ?? 0) + (offset == 0 ? "" : "+" + Hex.address(offset)) }
        var text = symbol
        if let ordinal { text += "/\(ordinal)" }
        if let module { text += " [\(module)]" }
        return text + "+" + Hex.address(offset)
    }

    /// Whether `live` matches `expected` under the mask.
    public func matchesExpected(_ live: [UInt8]) -> Bool {
        Hunk.firstMismatch(live, expected, mask: mask) == nil
    }

    /// Index of the first byte where `live` and `wanted` differ under `mask`, or nil if they match.
    public static func firstMismatch(_ live: [UInt8], _ wanted: [UInt8], mask: [UInt8]?) -> Int? {
        guard live.count == wanted.count else { return min(live.count, wanted.count) }
        for i in 0..<wanted.count {
            let m = mask.map { i < $0.count ? $0[i] : 0xff } ?? 0xff
            if live[i] & m != wanted[i] & m { return i }
        }
        return nil
    }

    enum CodingKeys: String, CodingKey {
        case symbol, module, ordinal, offset, address, expected, replacement, mask, reference
    }

    // Bytes and numbers are written as hex text so that bundles read like objdump output.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        symbol = try c.decodeIfPresent(String.self, forKey: .symbol)
        module = try c.decodeIfPresent(String.self, forKey: .module)
        ordinal = try c.decodeIfPresent(Int.self, forKey: .ordinal)
        offset = try HexCoding.decodeNumber(c, .offset)
        address = try c.contains(.address) ? HexCoding.decodeNumber(c, .address) : nil
        expected = try HexCoding.decodeBytes(c, .expected)
        replacement = try HexCoding.decodeBytes(c, .replacement)
        mask = try c.contains(.mask) ? HexCoding.decodeBytes(c, .mask) : nil
        reference = try c.decodeIfPresent(HunkReference.self, forKey: .reference)
        guard expected.count == replacement.count, !expected.isEmpty else {
            throw DecodingError.dataCorruptedError(forKey: .replacement, in: c, debugDescription:
                "expected has \(expected.count) bytes and replacement \(replacement.count): they must be equal and non-zero (in-place hunks only)")
        }
        if let mask, mask.count != expected.count {
            throw DecodingError.dataCorruptedError(forKey: .mask, in: c, debugDescription:
                "mask has \(mask.count) bytes, expected has \(expected.count)")
        }
        guard symbol != nil || address != nil || reference != nil else {
            throw DecodingError.dataCorruptedError(forKey: .symbol, in: c, debugDescription: "a hunk needs a symbol or an address (or a reference to follow)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(symbol, forKey: .symbol)
        try c.encodeIfPresent(module, forKey: .module)
        try c.encodeIfPresent(ordinal, forKey: .ordinal)
        try c.encode(Hex.address(offset), forKey: .offset)
        if let address { try c.encode(Hex.address(address), forKey: .address) }
        try c.encode(Hex.bytes(expected), forKey: .expected)
        try c.encode(Hex.bytes(replacement), forKey: .replacement)
        if let mask { try c.encode(Hex.bytes(mask), forKey: .mask) }
        try c.encodeIfPresent(reference, forKey: .reference)
    }
}

/// Hex text in JSON: numbers as `"0x2f"` (or plain JSON integers), bytes as `"74 39"`.
enum HexCoding {
    static func decodeNumber<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ key: K) throws -> UInt64 {
        if let n = try? c.decode(UInt64.self, forKey: key) { return n }
        let text = try c.decode(String.self, forKey: key)
        guard let n = Hex.parseNumber(text) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "expected a number like 0x2f, found \"\(text)\"")
        }
        return n
    }

    static func decodeBytes<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ key: K) throws -> [UInt8] {
        let text = try c.decode(String.self, forKey: key)
        guard let bytes = Hex.parseBytes(text) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "expected hex bytes like \"74 39\", found \"\(text)\"")
        }
        return bytes
    }
}
