/// The one place where Suture turns numbers and bytes into hex text and back.
///
/// Addresses are `UInt64` everywhere; these helpers keep formatting consistent across the
/// listing, the CLI, bundles and error messages.
public enum Hex {
    /// `0x` followed by lowercase hex digits, no padding: `0x2f`.
    public static func address(_ value: UInt64) -> String {
        "0x" + String(value, radix: 16)
    }

    /// Lowercase hex digits zero-padded to `width` characters: `ffffffffc03b2260`.
    public static func padded(_ value: UInt64, width: Int = 16) -> String {
        let digits = String(value, radix: 16)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    /// Bytes as space-separated pairs, as objdump prints them: `74 39`.
    public static func bytes<C: Collection>(_ bytes: C, separator: String = " ") -> String where C.Element == UInt8 {
        bytes.map { byte in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: separator)
    }

    /// Parses hex bytes written as `7439`, `74 39`, `74:39` or `0x74 0x39`.
    /// Returns nil on odd digit counts or non-hex characters.
    public static func parseBytes(_ text: String) -> [UInt8]? {
        var digits: [UInt8] = []
        var i = text.utf8.startIndex
        let utf8 = text.utf8
        while i < utf8.endIndex {
            let c = utf8[i]
            if c == UInt8(ascii: "0"), utf8.index(after: i) < utf8.endIndex,
               utf8[utf8.index(after: i)] | 0x20 == UInt8(ascii: "x") {
                i = utf8.index(i, offsetBy: 2)
                continue
            }
            if c == UInt8(ascii: " ") || c == UInt8(ascii: ":") || c == UInt8(ascii: ",") || c == UInt8(ascii: "\t") {
                i = utf8.index(after: i)
                continue
            }
            guard let v = nibble(c) else { return nil }
            digits.append(v)
            i = utf8.index(after: i)
        }
        guard digits.count % 2 == 0 else { return nil }
        return stride(from: 0, to: digits.count, by: 2).map { digits[$0] << 4 | digits[$0 + 1] }
    }

    /// Parses an unsigned number: `0x`-prefixed hex, or decimal.
    public static func parseNumber(_ text: String) -> UInt64? {
        let t = text.trimmingWhitespace()
        if t.hasPrefix("0x") || t.hasPrefix("0X") { return UInt64(t.dropFirst(2), radix: 16) }
        return UInt64(t, radix: 10)
    }

    @inline(__always)
    static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

extension String {
    /// Drops leading and trailing spaces, tabs and newlines (without Foundation).
    public func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }) else { return "" }
        let end = lastIndex(where: { !isSpace($0) })!
        return String(self[start...end])
    }
}
