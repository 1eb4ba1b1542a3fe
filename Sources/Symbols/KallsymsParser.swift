/// Reads `/proc/kallsyms` text: one `ADDRESS TYPE NAME` line per symbol, module symbols followed by
/// a tab and `[module]`:
///
///     ffffffff81000000 T _text
///     ffffffffc03b2260 t nfs_flock	[nfs]
///
/// Works on bytes (200k lines parse and index in about 25 ms, release build): no per-line `String`
/// splitting, one `String` allocation per long name, module names shared between lines.
public enum KallsymsParser {
    /// Parses kallsyms (or System.map, which has the same lines without modules). `file` names the
    /// input in errors. A kallsyms read without CAP_SYSLOG shows every address as zero: that is an
    /// error (`SymbolError.addressesHidden`), not a list of symbols at 0.
    public static func parse(_ text: some Collection<UInt8>, file: String) throws -> [SymbolRecord] {
        try SymbolLineParser.parse(text, file: file, format: "kallsyms")
    }
}

/// Reads a System.map (`nm -n vmlinux` filtered by the kernel's scripts/mksysmap), or any `nm -n`
/// output: `ADDRESS TYPE NAME` lines. Undefined symbols, which nm prints with a blank address
/// (`                 U puts`), have no address and are skipped.
public enum SystemMapParser {
    public static func parse(_ text: some Collection<UInt8>, file: String) throws -> [SymbolRecord] {
        try SymbolLineParser.parse(text, file: file, format: "System.map")
    }
}

/// The byte-level parser shared by kallsyms and System.map.
enum SymbolLineParser {
    static func parse(_ text: some Collection<UInt8>, file: String, format: String) throws(SymbolError) -> [SymbolRecord] {
        let result = text.withContiguousStorageIfAvailable { buffer in
            Result { () throws(SymbolError) in try parse(buffer, file: file, format: format) }
        }
        if let result { return try result.get() }
        let copy = Array(text)
        return try copy.withUnsafeBufferPointer { buffer throws(SymbolError) in
            try parse(buffer, file: file, format: format)
        }
    }

    private static let space = UInt8(ascii: " ")
    private static let tab = UInt8(ascii: "\t")
    private static let newline = UInt8(ascii: "\n")
    private static let carriageReturn = UInt8(ascii: "\r")

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, file: String, format: String) throws(SymbolError) -> [SymbolRecord] {
        var records: [SymbolRecord] = []
        // A kallsyms line is about 45 bytes: reserving avoids most regrowth of a large array.
        records.reserveCapacity(bytes.count / 32 + 1)
        var anyNonZero = false
        // Module symbols come in runs: reuse the previous line's module String when the bytes match,
        // so 20,000 "[nfs]" lines share one string.
        var lastModule: String? = nil
        var lastModuleStart = 0, lastModuleCount = 0

        // One pass over the bytes: each field is scanned once and the line ends where the fields
        // do. Errors are rare, so their details (line number, column) are worked out only then.
        let end = bytes.count
        var i = 0
        while i < end {
            let lineStart = i
            // Blank lines (and a lone CR) are allowed.
            if bytes[i] == newline { i += 1; continue }
            if bytes[i] == carriageReturn, i + 1 < end, bytes[i + 1] == newline { i += 2; continue }

            // ADDRESS: up to 16 hex digits. nm prints undefined symbols with spaces instead.
            // Fast path for the usual 64-bit line: 16 digits then a space, eight bytes at a time.
            var address: UInt64 = 0
            if i + 17 <= end, bytes[i + 16] == space {
                let raw = UnsafeRawPointer(bytes.baseAddress! + i)
                let high = raw.loadUnaligned(as: UInt64.self), low = raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                if SWAR.allHexDigits(high) && SWAR.allHexDigits(low) {
                    address = SWAR.hexValue(high) << 32 | SWAR.hexValue(low)
                    i += 16
                }
            }
            while i < end, let digit = hexValue(bytes[i]) {
                if i - lineStart == 16 { throw failure(bytes, lineStart, i, "at most 16 hex digits of address", file) }
                address = address << 4 | UInt64(digit)
                i += 1
            }
            if i == lineStart {
                if let next = skipUndefined(bytes, i) { i = next; continue }
                throw failure(bytes, lineStart, i, "a hex address", file)
            }
            guard i < end, bytes[i] == space else { throw failure(bytes, lineStart, i, "a space after the address", file) }
            while i < end && bytes[i] == space { i += 1 }

            // TYPE: one letter (nm also uses `?` and `-`).
            guard i < end, bytes[i] > space, bytes[i] < 0x7F else { throw failure(bytes, lineStart, i, "a type letter", file) }
            let kindByte = bytes[i]
            i += 1
            guard i < end, bytes[i] == space else {
                throw failure(bytes, lineStart, i, "a space after the one-letter type", file)
            }
            while i < end && bytes[i] == space { i += 1 }

            // NAME: up to a tab, a space or the end of the line.
            let nameStart = i
            i = SWAR.firstSpaceOrControl(bytes, from: i)
            guard i > nameStart else { throw failure(bytes, lineStart, i, "a symbol name", file) }
            let nameEnd = i

            // Optional `\t[module]`.
            var module: String? = nil
            if i < end && bytes[i] == tab {
                i += 1
                guard i < end, bytes[i] == UInt8(ascii: "[") else { throw failure(bytes, lineStart, i, "[module] after the tab", file) }
                let moduleStart = i + 1
                var j = moduleStart
                while j < end && bytes[j] != UInt8(ascii: "]") && bytes[j] > space { j += 1 }
                guard j < end, bytes[j] == UInt8(ascii: "]") else {
                    throw failure(bytes, lineStart, j, "] closing the module name", file)
                }
                guard j > moduleStart else { throw failure(bytes, lineStart, j, "a module name inside [ ]", file) }
                let count = j - moduleStart
                if let lastModule, count == lastModuleCount, memoryEqual(bytes, lastModuleStart, moduleStart, count) {
                    module = lastModule
                } else {
                    let name = String(decoding: UnsafeBufferPointer(rebasing: bytes[moduleStart..<j]), as: UTF8.self)
                    module = name
                    lastModule = name
                    lastModuleStart = moduleStart
                    lastModuleCount = count
                }
                i = j + 1
                while i < end && (bytes[i] == space || bytes[i] == tab) { i += 1 }
                guard i == end || bytes[i] == newline || bytes[i] == carriageReturn else {
                    throw failure(bytes, lineStart, i, "end of line after [module]", file)
                }
            }
            // End of line: LF, CRLF or the end of the text.
            if i < end {
                if bytes[i] == carriageReturn && i + 1 < end && bytes[i + 1] == newline { i += 1 }
                guard bytes[i] == newline else {
                    throw failure(bytes, lineStart, i, "end of line or a tab and [module] after the name", file)
                }
                i += 1
            }

            if address != 0 { anyNonZero = true }
            let name = String(decoding: UnsafeBufferPointer(rebasing: bytes[nameStart..<nameEnd]), as: UTF8.self)
            records.append(SymbolRecord(name: name, address: address, kindByte: kindByte, size: nil,
                                        module: module, section: nil, isFunction: SymbolRecord.isFunctionKind(kindByte)))
        }
        guard !records.isEmpty else { throw .noSymbols(file: file) }
        guard anyNonZero else {
            if format == "kallsyms" { throw .addressesHidden(file: file, symbols: records.count) }
            throw .malformedLine(file: file, line: 1, column: 1, expected: "symbol addresses",
                                 found: "all \(records.count) addresses zero")
        }
        return records
    }

    /// `                 U name`: an undefined symbol in nm output, which has no address. Returns
    /// where the next line starts, or nil when the line is something else.
    private static func skipUndefined(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int) -> Int? {
        var j = start
        while j < bytes.count && bytes[j] == space { j += 1 }
        guard j > start, j + 1 < bytes.count, bytes[j + 1] == space,
              bytes[j] == UInt8(ascii: "U") || bytes[j] == UInt8(ascii: "w") || bytes[j] == UInt8(ascii: "v")
        else { return nil }
        while j < bytes.count && bytes[j] != newline { j += 1 }
        return j + 1
    }

    /// The error for a line that went wrong at `at`: counts lines up to it (only now, to keep the
    /// good path lean) and quotes what was found.
    @inline(never)
    private static func failure(_ bytes: UnsafeBufferPointer<UInt8>, _ lineStart: Int, _ at: Int,
                                _ expected: String, _ file: String) -> SymbolError {
        var lineNumber = 1
        for k in 0..<lineStart where bytes[k] == newline { lineNumber += 1 }
        var lineEnd = lineStart
        while lineEnd < bytes.count && bytes[lineEnd] != newline && bytes[lineEnd] != carriageReturn { lineEnd += 1 }
        let stop = min(lineEnd, at + 48)
        let found = at >= lineEnd ? "end of line"
            : "\"" + String(decoding: UnsafeBufferPointer(rebasing: bytes[at..<stop]), as: UTF8.self)
                + (stop < lineEnd ? "..." : "") + "\""
        return .malformedLine(file: file, line: lineNumber, column: at - lineStart + 1, expected: expected, found: found)
    }

    @inline(__always)
    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c &- UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c &- UInt8(ascii: "a") &+ 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c &- UInt8(ascii: "A") &+ 10
        default: return nil
        }
    }

    @inline(__always)
    private static func memoryEqual(_ bytes: UnsafeBufferPointer<UInt8>, _ a: Int, _ b: Int, _ count: Int) -> Bool {
        var k = 0
        while k < count {
            if bytes[a + k] != bytes[b + k] { return false }
            k += 1
        }
        return true
    }
}

/// Eight bytes at a time (SIMD within a register): the parser's inner loops. Little-endian loads,
/// so the first byte in memory is the lowest of the word.
enum SWAR {
    static let ones: UInt64 = 0x0101_0101_0101_0101
    static let highBits: UInt64 = 0x8080_8080_8080_8080

    /// Index of the first byte <= 0x20 (space, tab, newline, CR) at or after `start`, or the end.
    /// Bytes >= 0x80 (UTF-8) never match.
    @inline(__always)
    static func firstSpaceOrControl(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        var i = start
        let end = bytes.count
        if let base = bytes.baseAddress {
            while i + 8 <= end {
                let w = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                // The classic "has a byte less than n" test; only bytes above a true match can be
                // false positives, and we take the lowest.
                let match = (w &- ones &* 0x21) & ~w & highBits
                if match != 0 { return i + match.trailingZeroBitCount >> 3 }
                i += 8
            }
        }
        while i < end && bytes[i] > 0x20 { i += 1 }
        return i
    }

    /// Whether all eight bytes are ASCII hex digits (either case).
    @inline(__always)
    static func allHexDigits(_ w: UInt64) -> Bool {
        guard w & highBits == 0 else { return false }
        // For bytes below 0x80 no sum below carries into the next byte, so each byte's top bit
        // answers "c >= lo" (c + 0x80 - lo) and "c > hi" (c + 0x7F - hi) on its own.
        @inline(__always) func inRange(_ x: UInt64, _ lo: UInt64, _ hi: UInt64) -> UInt64 {
            (x &+ ones &* (0x80 - lo)) & ~(x &+ ones &* (0x7F - hi)) & highBits
        }
        let digits = inRange(w, 0x30, 0x39)
        let letters = inRange(w | ones &* 0x20, 0x61, 0x66)
        return digits | letters == highBits
    }

    /// The value of eight hex digits (already checked), first digit most significant.
    @inline(__always)
    static func hexValue(_ w: UInt64) -> UInt64 {
        // '0'-'9' are 0x30-0x39, 'a'-'f' 0x61-0x66, 'A'-'F' 0x41-0x46: low nibble, plus 9 for letters.
        var v = (w & (ones &* 0x0F)) &+ ((w >> 6) & ones) &* 9
        v = v.byteSwapped                                   // first digit in the top byte
        v = (v | v >> 4) & 0x00FF_00FF_00FF_00FF            // pairs of nibbles into bytes
        v = (v | v >> 8) & 0x0000_FFFF_0000_FFFF
        v = (v | v >> 16) & 0x0000_0000_FFFF_FFFF
        return v
    }
}
