/// Reads `/proc/kallsyms` text: one `ADDRESS TYPE NAME` line per symbol, module symbols followed by
/// a tab and `[module]`:
///
///     ffffffff81000000 T _text
///     ffffffffc03b2260 t nfs_flock	[nfs]
///
/// Works on bytes (a 200k-line kallsyms parses in a few milliseconds): no per-line `String`
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
        // A kallsyms line is about 40 bytes; reserving avoids repeated growth of a large array.
        records.reserveCapacity(bytes.count / 32 + 1)
        var anyNonZero = false
        // Module symbols come in runs: reuse the previous line's module String when the bytes match,
        // so 20,000 "[nfs]" lines share one string.
        var lastModule: String? = nil
        var lastModuleStart = 0, lastModuleCount = 0

        let end = bytes.count
        var lineStart = 0
        var lineNumber = 0
        while lineStart < end {
            lineNumber += 1
            var lineEnd = lineStart
            while lineEnd < end && bytes[lineEnd] != newline { lineEnd += 1 }
            let next = lineEnd + 1
            // Tolerate CRLF files.
            if lineEnd > lineStart && bytes[lineEnd - 1] == carriageReturn { lineEnd -= 1 }
            defer { lineStart = next }
            if lineEnd == lineStart { continue }

            func fail(_ at: Int, _ expected: String) -> SymbolError {
                let stop = min(lineEnd, at + 48)
                let found = at >= lineEnd ? "end of line"
                    : "\"" + String(decoding: UnsafeBufferPointer(rebasing: bytes[at..<stop]), as: UTF8.self)
                        + (stop < lineEnd ? "..." : "") + "\""
                return .malformedLine(file: file, line: lineNumber, column: at - lineStart + 1,
                                      expected: expected, found: found)
            }

            // ADDRESS: up to 16 hex digits. nm prints undefined symbols with spaces instead.
            var i = lineStart
            var address: UInt64 = 0
            while i < lineEnd, let digit = hexValue(bytes[i]) {
                if i - lineStart == 16 { throw fail(i, "at most 16 hex digits of address") }
                address = address << 4 | UInt64(digit)
                i += 1
            }
            if i == lineStart {
                if bytes[i] == space {
                    // `                 U name`: an undefined symbol in nm output; it has no address.
                    var j = i
                    while j < lineEnd && bytes[j] == space { j += 1 }
                    if j < lineEnd, j + 1 == lineEnd || bytes[j + 1] == space,
                       bytes[j] == UInt8(ascii: "U") || bytes[j] == UInt8(ascii: "w") || bytes[j] == UInt8(ascii: "v") {
                        continue
                    }
                }
                throw fail(i, "a hex address")
            }
            guard i < lineEnd, bytes[i] == space else { throw fail(i, "a space after the address") }
            while i < lineEnd && bytes[i] == space { i += 1 }

            // TYPE: one letter (nm also uses `?` and `-`).
            guard i < lineEnd, bytes[i] > space, bytes[i] < 0x7F else { throw fail(i, "a type letter") }
            let kindByte = bytes[i]
            i += 1
            guard i < lineEnd, bytes[i] == space else { throw fail(i, "a space after the one-letter type") }
            while i < lineEnd && bytes[i] == space { i += 1 }

            // NAME: up to a tab, a space or the end of the line.
            let nameStart = i
            while i < lineEnd && bytes[i] != tab && bytes[i] != space { i += 1 }
            guard i > nameStart else { throw fail(i, "a symbol name") }
            let nameEnd = i

            // Optional `\t[module]`.
            var module: String? = nil
            if i < lineEnd {
                guard bytes[i] == tab else { throw fail(i, "end of line or a tab and [module] after the name") }
                i += 1
                guard i < lineEnd, bytes[i] == UInt8(ascii: "[") else { throw fail(i, "[module] after the tab") }
                let moduleStart = i + 1
                var j = moduleStart
                while j < lineEnd && bytes[j] != UInt8(ascii: "]") && bytes[j] > space { j += 1 }
                guard j < lineEnd, bytes[j] == UInt8(ascii: "]") else { throw fail(j, "] closing the module name") }
                guard j > moduleStart else { throw fail(j, "a module name inside [ ]") }
                let count = j - moduleStart
                if let lastModule, count == lastModuleCount,
                   memoryEqual(bytes, lastModuleStart, moduleStart, count) {
                    module = lastModule
                } else {
                    let name = String(decoding: UnsafeBufferPointer(rebasing: bytes[moduleStart..<j]), as: UTF8.self)
                    module = name
                    lastModule = name
                    lastModuleStart = moduleStart
                    lastModuleCount = count
                }
                i = j + 1
                while i < lineEnd && (bytes[i] == space || bytes[i] == tab) { i += 1 }
                guard i == lineEnd else { throw fail(i, "end of line after [module]") }
            }

            if address != 0 { anyNonZero = true }
            let name = String(decoding: UnsafeBufferPointer(rebasing: bytes[nameStart..<nameEnd]), as: UTF8.self)
            let kind = Character(Unicode.Scalar(kindByte))
            records.append(SymbolRecord(name: name, address: address, kind: kind, size: nil,
                                        module: module, section: nil,
                                        isFunction: SymbolRecord.isFunctionKind(kind)))
        }
        guard !records.isEmpty else { throw .noSymbols(file: file) }
        guard anyNonZero else {
            if format == "kallsyms" { throw .addressesHidden(file: file, symbols: records.count) }
            throw .malformedLine(file: file, line: 1, column: 1, expected: "symbol addresses",
                                 found: "all \(records.count) addresses zero")
        }
        return records
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
