import ELF

/// One symbol as Suture sees it, whatever it came from: a `/proc/kallsyms` line, a System.map line,
/// or an ELF symbol table entry.
public struct SymbolRecord: Sendable, Hashable {
    public var name: String
    /// The symbol's address; section-relative when `section` is set (relocatable objects).
    public var address: UInt64
    /// The nm/kallsyms type letter: uppercase is global, lowercase local (`T` `t` `D` `d` `B` `b`
    /// `R` `r` `W` `w` `A` ...). Non-ASCII characters are stored as `?`.
    public var kind: Character {
        get { Character(Unicode.Scalar(kindByte)) }
        set { kindByte = newValue.asciiValue ?? UInt8(ascii: "?") }
    }
    /// The letter as its ASCII byte: what lookups compare, since comparing `Character`s is slow.
    public var kindByte: UInt8
    /// Known (ELF `st_size`) or inferred by `SymbolIndex` (up to the next symbol); nil when neither.
    public var size: UInt64?
    /// The kernel module it belongs to (`"nfs"`), nil for the core kernel or a plain program.
    public var module: String?
    /// For symbols of relocatable objects (.o, .ko): the section's name; `address` is then relative to it.
    public var section: String?
    /// Code (`t` `T` `w` `W` `i`, or `STT_FUNC`/`STT_GNU_IFUNC`) rather than data.
    public var isFunction: Bool

    /// Whether an nm/kallsyms letter names code.
    public static func isFunctionKind(_ kind: Character) -> Bool {
        kind.asciiValue.map(isFunctionKind) ?? false
    }

    @inline(__always)
    public static func isFunctionKind(_ kind: UInt8) -> Bool {
        switch kind {
        case UInt8(ascii: "t"), UInt8(ascii: "T"), UInt8(ascii: "w"), UInt8(ascii: "W"), UInt8(ascii: "i"): return true
        default: return false
        }
    }

    /// `A`/`a`: the value is a number, not an address (per-CPU offsets, linker constants), so
    /// address lookups ignore it.
    public var isAbsolute: Bool { kindByte == UInt8(ascii: "A") || kindByte == UInt8(ascii: "a") }

    /// Uppercase letters are global symbols.
    public var isGlobal: Bool { kindByte >= UInt8(ascii: "A") && kindByte <= UInt8(ascii: "Z") }
}

// The initializers live in an extension so the struct keeps its memberwise initializer
// `init(name:address:kindByte:size:module:section:isFunction:)`, which the parsers use: with a
// hand-written one, Swift 6.3 built each record in a temporary and copied it (four atomic
// reference-count operations a record, 7% of a kallsyms parse).
extension SymbolRecord {
    public init(name: String, address: UInt64, kind: Character, size: UInt64? = nil,
                module: String? = nil, section: String? = nil, isFunction: Bool? = nil) {
        let kindByte = kind.asciiValue ?? UInt8(ascii: "?")
        self.init(name: name, address: address, kindByte: kindByte, size: size, module: module, section: section,
                  isFunction: isFunction ?? SymbolRecord.isFunctionKind(kindByte))
    }

    /// `name [module]`, or the bare name for the core kernel or a program.
    public var qualifiedName: String {
        guard let module else { return name }
        return "\(name) [\(module)]"
    }
}

extension SymbolRecord: CustomStringConvertible {
    /// `ffffffffc03b2260 t nfs_flock [nfs]`, as kallsyms would show it (with the section for
    /// relocatable objects).
    public var description: String {
        var text = Hex.padded(address) + " " + String(kind) + " " + name
        if let module { text += " [\(module)]" }
        if let section { text += " (\(section))" }
        return text
    }
}

// Addresses and sizes are encoded as "0x..." strings: JSON numbers above 2^53 lose precision in
// most readers (jq, JavaScript), and kernel addresses are all above it. `kind` is a one-letter
// string because `Character` is not Codable.
extension SymbolRecord: Codable {
    private enum CodingKeys: String, CodingKey {
        case name, address, kind, size, module, section, isFunction
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        address = try Self.decodeNumber(c, .address)
        let kindText = try c.decode(String.self, forKey: .kind)
        guard kindText.count == 1, let letter = kindText.first else {
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c,
                debugDescription: "expected one type letter, found \"\(kindText)\"")
        }
        kindByte = letter.asciiValue ?? UInt8(ascii: "?")
        if try !c.contains(.size) || c.decodeNil(forKey: .size) {
            size = nil
        } else {
            size = try Self.decodeNumber(c, .size)
        }
        module = try c.decodeIfPresent(String.self, forKey: .module)
        section = try c.decodeIfPresent(String.self, forKey: .section)
        isFunction = try c.decodeIfPresent(Bool.self, forKey: .isFunction) ?? Self.isFunctionKind(letter)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(Hex.address(address), forKey: .address)
        try c.encode(String(kind), forKey: .kind)
        try c.encode(size.map(Hex.address), forKey: .size)
        try c.encode(module, forKey: .module)
        try c.encodeIfPresent(section, forKey: .section)
        try c.encode(isFunction, forKey: .isFunction)
    }

    /// Accepts "0x..." strings (what we write) and plain JSON numbers.
    private static func decodeNumber(_ c: KeyedDecodingContainer<CodingKeys>,
                                     _ key: CodingKeys) throws -> UInt64 {
        if let number = try? c.decode(UInt64.self, forKey: key) { return number }
        let text = try c.decode(String.self, forKey: key)
        guard let value = Hex.parseNumber(text) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: c,
                debugDescription: "expected a number or \"0x...\", found \"\(text)\"")
        }
        return value
    }
}
