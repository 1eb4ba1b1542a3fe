/// Hex text ⇄ bytes for GDB packets, without per-byte allocation (a read of kernel text decodes
/// megabytes of hex). `ELF.Hex` stays the formatter for anything a human reads.
enum HexCodec {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    /// 0...15 for a hex digit, 0xff otherwise.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xff, count: 256)
        for (i, c) in "0123456789abcdef".utf8.enumerated() { table[Int(c)] = UInt8(i) }
        for (i, c) in "ABCDEF".utf8.enumerated() { table[Int(c)] = UInt8(10 + i) }
        return table
    }()

    /// Appends the lowercase hex digits of `bytes`.
    static func append<C: Collection>(_ bytes: C, to out: inout [UInt8]) where C.Element == UInt8 {
        out.reserveCapacity(out.count + bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
    }

    /// Appends `value` in hex without leading zeros (`0` for zero): GDB's address and length syntax.
    static func appendNumber(_ value: UInt64, to out: inout [UInt8]) {
        var shift = 60
        while shift > 0, (value >> UInt64(shift)) & 0xf == 0 { shift -= 4 }
        while shift >= 0 {
            out.append(digits[Int((value >> UInt64(shift)) & 0xf)])
            shift -= 4
        }
    }

    /// Decodes `text` (an even number of hex digits) into `destination`; returns how many bytes were
    /// written, or nil if a character is not a hex digit or the destination is too small.
    static func decode(_ text: UnsafeBufferPointer<UInt8>, into destination: UnsafeMutableRawBufferPointer) -> Int? {
        let count = text.count / 2
        guard text.count % 2 == 0, count <= destination.count else { return nil }
        var bad: UInt8 = 0
        for i in 0..<count {
            let hi = values[Int(text[2 * i])], lo = values[Int(text[2 * i + 1])]
            bad |= (hi | lo) & 0xf0
            destination[i] = hi << 4 | (lo & 0xf)
        }
        return bad == 0 ? count : nil
    }

    /// Decodes a whole hex string into bytes, or nil.
    static func decode(_ text: [UInt8]) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: text.count / 2)
        let n = text.withUnsafeBufferPointer { src in out.withUnsafeMutableBytes { decode(src, into: $0) } }
        return n == nil ? nil : out
    }

    /// A hex number (`1f`), or nil.
    static func number<C: Collection>(_ text: C) -> UInt64? where C.Element == UInt8 {
        guard !text.isEmpty, text.count <= 16 else { return nil }
        var v: UInt64 = 0
        for c in text {
            let d = values[Int(c)]
            guard d < 16 else { return nil }
            v = v << 4 | UInt64(d)
        }
        return v
    }
}
