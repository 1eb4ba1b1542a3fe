/// Instructions laid out like `objdump -dr`:
///
/// ```
///       2b:	f6 43 50 02          	testb  $0x2,0x50(%rbx)
///       2f:	74 39                	je     6a <nfs_flock+0x6a>
///       31:	e8 00 00 00 00       	call   36 <nfs_flock+0x36>
/// 			32: R_X86_64_PLT32	locks_lock_inode_wait-0x4
/// ```
///
/// x86 shows 7 bytes a line and continues longer instructions on lines of their own; arm64 shows each
/// instruction as one 32-bit word. Direct branch targets and RIP-relative operands get a
/// `<symbol+offset>` from `symbolize`; annotation lines (relocations) appear under the instruction that
/// contains their address, after its continuation lines.
public struct Listing {
    public var instructions: [Instruction]
    /// Hex digits of the address column; nil: objdump's choice for a section ending after the last
    /// instruction.
    public var addressWidth: Int?
    public var symbolize: (UInt64) -> String?
    public var annotations: [UInt64: [String]]
    /// arm64 instructions are shown as one 32-bit word, x86 ones byte by byte.
    public var architecture: Architecture

    public init(instructions: [Instruction], addressWidth: Int? = nil, symbolize: @escaping (UInt64) -> String?,
                annotations: [UInt64: [String]] = [:], architecture: Architecture = .x86_64) {
        self.instructions = instructions
        self.addressWidth = addressWidth
        self.symbolize = symbolize
        self.annotations = annotations
        self.architecture = architecture
    }

    /// objdump's address column width for a section that ends at `end`: 16 hex digits less the leading
    /// zeros they share, rounded so at least one zero stays and groups of 4 are dropped.
    public static func objdumpAddressWidth(sectionEnd end: UInt64) -> Int {
        let leadingZeroDigits = end == 0 ? 16 : end.leadingZeroBitCount / 4
        guard leadingZeroDigits > 0, leadingZeroDigits < 16 || end == 0 else { return 16 }
        let skip = (leadingZeroDigits - 1) & ~3
        return 16 - skip
    }

    public func render() -> String {
        var out = ""
        out.reserveCapacity(instructions.count * 64)
        let width = addressWidth ?? Self.objdumpAddressWidth(sectionEnd: instructions.last?.endAddress ?? 0)
        let sortedAnnotations = annotations.keys.sorted()
        // Annotations before the first instruction belong to code not shown.
        var nextAnnotation = sortedAnnotations.firstIndex { $0 >= (instructions.first?.address ?? 0) }
            ?? sortedAnnotations.count
        for insn in instructions {
            if architecture == .arm64, insn.bytes.count == 4 {
                renderWord(insn, width: width, into: &out)
            } else {
                renderX86(insn, width: width, into: &out)
            }
            // Annotations for addresses before this instruction's end that were not shown yet (an
            // address between instructions is shown under the one before it, like objdump).
            while nextAnnotation < sortedAnnotations.count, sortedAnnotations[nextAnnotation] < insn.endAddress {
                let key = sortedAnnotations[nextAnnotation]
                for line in annotations[key] ?? [] {
                    out += "\t\t\t"
                    out += String(key, radix: 16)
                    out += ": "
                    out += line
                    out += "\n"
                }
                nextAnnotation += 1
            }
        }
        return out
    }

    // MARK: Layout

    private static let hexDigits: [Character] = Array("0123456789abcdef")

    private func appendAddress(_ address: UInt64, width: Int, into out: inout String) {
        // objdump blanks leading zeros but keeps the last digit.
        let digits = String(address, radix: 16)
        if digits.count < width { out += String(repeating: " ", count: width - digits.count) }
        out += digits
        out += ":\t"
    }

    private static func appendByte(_ byte: UInt8, into out: inout String) {
        out.append(hexDigits[Int(byte >> 4)])
        out.append(hexDigits[Int(byte & 0xF)])
    }

    private func renderX86(_ insn: Instruction, width: Int, into out: inout String) {
        let perLine = 7
        appendAddress(insn.address, width: width, into: &out)
        let first = insn.bytes.prefix(perLine)
        for byte in first {
            Self.appendByte(byte, into: &out)
            out += " "
        }
        out += String(repeating: "   ", count: perLine - first.count)
        out += "\t"
        appendText(insn, mnemonicWidth: 6, separator: " ", into: &out)
        out += "\n"
        var offset = perLine
        while offset < insn.bytes.count {
            appendAddress(insn.address &+ UInt64(offset), width: width, into: &out)
            for byte in insn.bytes[offset..<min(offset + perLine, insn.bytes.count)] {
                Self.appendByte(byte, into: &out)
                out += " "
            }
            out += "\n"
            offset += perLine
        }
    }

    private func renderWord(_ insn: Instruction, width: Int, into out: inout String) {
        appendAddress(insn.address, width: width, into: &out)
        for byte in insn.bytes.reversed() { Self.appendByte(byte, into: &out) }
        out += " \t"
        appendText(insn, mnemonicWidth: 0, separator: "\t", into: &out)
        out += "\n"
    }

    /// Mnemonic, then operands with the branch target or RIP-relative address symbolised.
    private func appendText(_ insn: Instruction, mnemonicWidth: Int, separator: String, into out: inout String) {
        out += insn.mnemonic
        let operands = Array(insn.operands.utf8)
        guard !operands.isEmpty else { return }
        let mnemonicLength = insn.mnemonic.utf8.count
        if mnemonicLength < mnemonicWidth {
            out += String(repeating: " ", count: mnemonicWidth - mnemonicLength)
        }
        out += separator
        if let target = insn.target, let range = Self.lastImmediate(target, in: operands) {
            // objdump writes a branch target as bare hex followed by <symbol+offset>, or 0x-hex alone.
            Self.appendOperands(operands[..<range.lowerBound], into: &out)
            if let name = symbolize(target) {
                out += String(target, radix: 16) + " <" + name + ">"
            } else {
                out += "0x" + String(target, radix: 16)
            }
            Self.appendOperands(operands[range.upperBound...], into: &out)
        } else {
            Self.appendOperands(operands[...], into: &out)
            // objdump's comment on a RIP-relative operand: the address it refers to.
            if let address = Self.ripRelativeAddress(insn) {
                if let name = symbolize(address) {
                    out += "        # " + String(address, radix: 16) + " <" + name + ">"
                } else {
                    out += "        # 0x" + String(address, radix: 16)
                }
            }
        }
    }

    /// Operand text with objdump's separators: `%edi,%eax` where Capstone writes `%edi, %eax`.
    private static func appendOperands(_ text: ArraySlice<UInt8>, into out: inout String) {
        var kept: [UInt8] = []
        kept.reserveCapacity(text.count)
        var previous: UInt8 = 0
        for c in text {
            if c == UInt8(ascii: " "), previous == UInt8(ascii: ",") { continue }
            kept.append(c)
            previous = c
        }
        out += String(decoding: kept, as: UTF8.self)
    }

    /// Where the operand text writes `target` (`0x6a`, arm64 `#0x6a`; Capstone writes values below 10 in
    /// decimal: `#0`), last occurrence, as a whole number.
    static func lastImmediate(_ target: UInt64, in operands: [UInt8]) -> Range<Int>? {
        var spellings = [Array(("0x" + String(target, radix: 16)).utf8)]
        if target < 10 { spellings.append(Array(String(target).utf8)) }
        for text in spellings {
            var searchEnd = operands.count
            while let found = lastOccurrence(of: text, in: operands[..<searchEnd]) {
                let end = found + text.count
                let before = found > 0 ? operands[found - 1] : UInt8(ascii: " ")
                let after = end < operands.count ? operands[end] : UInt8(ascii: " ")
                let separated = before == UInt8(ascii: " ") || before == UInt8(ascii: ",") || before == UInt8(ascii: "#")
                    || before == UInt8(ascii: "$")
                if separated && !isHexDigit(after) && after != UInt8(ascii: "x") && after != UInt8(ascii: "(") {
                    let start = before == UInt8(ascii: "#") ? found - 1 : found
                    return start..<end
                }
                searchEnd = found
            }
        }
        return nil
    }

    /// The address a RIP-relative operand refers to (`-0x11(%rip)`, `[rip + 0x10]`), from the operand
    /// text: the displacement counts from the end of the instruction.
    static func ripRelativeAddress(_ insn: Instruction) -> UInt64? {
        let operands = Array(insn.operands.utf8)
        if let rip = lastOccurrence(of: Array("(%rip)".utf8), in: operands[...]) {
            var start = rip
            while start > 0 {
                let c = operands[start - 1]
                if isHexDigit(c) || c == UInt8(ascii: "x") || c == UInt8(ascii: "-") { start -= 1 } else { break }
            }
            return displaced(insn, text: operands[start..<rip])
        }
        if let rip = lastOccurrence(of: Array("[rip".utf8), in: operands[...]) {
            guard let close = operands[(rip + 4)...].firstIndex(of: UInt8(ascii: "]")) else { return nil }
            var inner = operands[(rip + 4)..<close].filter { $0 != UInt8(ascii: " ") }[...]
            if inner.first == UInt8(ascii: "+") { inner = inner.dropFirst() }
            return displaced(insn, text: inner)
        }
        return nil
    }

    private static func displaced(_ insn: Instruction, text: ArraySlice<UInt8>) -> UInt64? {
        var t = text
        let negative = t.first == UInt8(ascii: "-")
        if negative { t = t.dropFirst() }
        var value: UInt64 = 0
        if t.starts(with: [UInt8(ascii: "0"), UInt8(ascii: "x")]) {
            guard t.count > 2, t.count <= 18 else { return nil }
            for c in t.dropFirst(2) {
                guard let v = nibble(c) else { return nil }
                value = value << 4 | UInt64(v)
            }
        } else {
            guard t.count <= 19 else { return nil }
            for c in t {
                guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
                value = value &* 10 &+ UInt64(c - UInt8(ascii: "0"))
            }
        }
        return negative ? insn.endAddress &- value : insn.endAddress &+ value
    }

    private static func lastOccurrence(of needle: [UInt8], in haystack: ArraySlice<UInt8>) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        var i = haystack.endIndex - needle.count
        while i >= haystack.startIndex {
            if haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i -= 1
        }
        return nil
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func isHexDigit(_ c: UInt8) -> Bool { nibble(c) != nil }
}
