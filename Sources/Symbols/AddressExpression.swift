import ELF

/// An address as people write it: `0xffffffff810bee50`, `ffffffff810bee50` (bare hex of 8 digits
/// or more), `nfs_flock+0x2f`, `nfs_flock [nfs]+0x2f`, `nfs_flock[nfs]+0x2f`, `nfs_flock/2+0x10`,
/// `sym+47` (decimal, as in gdb), `sym-0x4`, `*0x...` (gdb's code-address star), `'name.cold'+4`,
/// and `module:symbol` (`libfoo.so:parse_header+0x1c`, `nfs:nfs_flock`), the same as `symbol [module]`.
///
/// The ordinal `/N` counts the symbols of that name from 1 in address order (see
/// `SymbolIndex.resolve`); it may come before or after the `[module]`. Several offsets add up
/// (`sym+0x10-4`).
public struct AddressExpression: Sendable, Hashable, CustomStringConvertible {
    public enum Base: Sendable, Hashable {
        case absolute(UInt64)
        case symbol(name: String, module: String?, ordinal: Int?)
    }

    public var base: Base
    public var offset: Int64

    public init(base: Base, offset: Int64 = 0) {
        self.base = base
        self.offset = offset
    }

    /// The canonical spelling: `nfs_flock/2 [nfs]+0x2f`, `0xffffffff810bee50`.
    public var description: String {
        var text: String
        switch base {
        case .absolute(let address):
            text = Hex.address(address)
        case let .symbol(name, module, ordinal):
            text = AddressExpression.needsQuotes(name) ? "'\(name)'" : name
            if let ordinal { text += "/\(ordinal)" }
            if let module { text += " [\(module)]" }
        }
        if offset > 0 { text += "+" + Hex.address(UInt64(offset)) }
        if offset < 0 { text += "-" + Hex.address(offset.magnitude) }
        return text
    }

    // MARK: Parsing

    public static func parse(_ text: String) throws(SymbolError) -> AddressExpression {
        var parser = Parser(text: text)
        return try parser.parse()
    }

    /// Characters of an unquoted symbol name (C identifiers plus the `.` of `.cold`/`.isra.0`,
    /// `$` and the `@` of versioned names). Digits may not start one: `1234` is no name.
    static func isNameStart(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") || c == UInt8(ascii: "$")
    }

    static func isNameByte(_ c: UInt8) -> Bool {
        isNameStart(c) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "@")
    }

    /// Characters of a module name: a kernel module (`nfs_layout_nfsv41_files`, `nfs-layout`) or a
    /// library's file name (`libc.so.6`, `libstdc++.so.6`, `ld-linux-x86-64.so.2`).
    static func isModuleByte(_ c: UInt8) -> Bool {
        isNameByte(c) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+")
    }

    static func needsQuotes(_ name: String) -> Bool {
        guard let first = name.utf8.first, isNameStart(first) else { return true }
        return !name.utf8.allSatisfy(isNameByte) || isBareHexAddress(Array(name.utf8)[...])
    }

    /// Eight or more hex digits and nothing else: an address, even if a symbol could be so named.
    static func isBareHexAddress(_ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.count >= 8 && bytes.allSatisfy { SymbolLineParser.hexValue($0) != nil }
    }

    private struct Parser {
        let text: String
        let bytes: [UInt8]
        var i = 0

        init(text: String) {
            self.text = text
            self.bytes = Array(text.utf8)
        }

        func fail(_ at: Int, _ expected: String) -> SymbolError {
            let found: String
            if at >= bytes.count {
                found = "end of text"
            } else {
                var stop = at + 1
                // Show the whole offending token, not one byte of it.
                while stop < bytes.count, stop - at < 24, bytes[stop] != UInt8(ascii: " "),
                      bytes[stop] != UInt8(ascii: "+"), bytes[stop] != UInt8(ascii: "-") { stop += 1 }
                found = "\"" + String(decoding: bytes[at..<stop], as: UTF8.self) + "\""
            }
            return .badExpression(text: text, column: at + 1, expected: expected, found: found)
        }

        mutating func skipSpaces() {
            while i < bytes.count, bytes[i] == UInt8(ascii: " ") || bytes[i] == UInt8(ascii: "\t") { i += 1 }
        }

        mutating func parse() throws(SymbolError) -> AddressExpression {
            skipSpaces()
            if i < bytes.count, bytes[i] == UInt8(ascii: "*") {
                i += 1
                skipSpaces()
            }
            guard i < bytes.count else { throw fail(i, "an address or a symbol name") }
            let base = try parseBase()
            var offset: Int64 = 0
            skipSpaces()
            while i < bytes.count {
                let sign = bytes[i]
                guard sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") else {
                    throw fail(i, "+OFFSET, -OFFSET or the end")
                }
                i += 1
                skipSpaces()
                let start = i
                let magnitude = try parseNumber(what: "an offset (0x2f or decimal 47)")
                guard magnitude <= UInt64(Int64.max) else { throw fail(start, "an offset below 2^63") }
                let term = sign == UInt8(ascii: "+") ? Int64(magnitude) : -Int64(magnitude)
                let (sum, overflow) = offset.addingReportingOverflow(term)
                guard !overflow else { throw fail(start, "offsets whose sum fits in 64 bits") }
                offset = sum
                skipSpaces()
            }
            return AddressExpression(base: base, offset: offset)
        }

        mutating func parseBase() throws(SymbolError) -> Base {
            // `module:symbol`: a module name (a library's file name may hold `-`, `+` and dots) and a
            // colon right before a symbol name. Looked for first, so `deadbeef00:sym` is no address.
            let prefixModule = parseModulePrefix()
            let start = i
            // 0x... or a bare run of 8+ hex digits: an absolute address.
            var end = i
            while end < bytes.count, AddressExpression.isNameByte(bytes[end]) { end += 1 }
            let word = bytes[start..<end]
            if prefixModule == nil, word.count >= 2, word.first == UInt8(ascii: "0"), word[start + 1] | 0x20 == UInt8(ascii: "x") {
                return .absolute(try parseNumber(what: "an address"))
            }
            if prefixModule == nil, AddressExpression.isBareHexAddress(word) {
                guard word.count <= 16 else { throw fail(start, "an address of at most 16 hex digits") }
                var value: UInt64 = 0
                for c in word { value = value << 4 | UInt64(SymbolLineParser.hexValue(c)!) }
                i = end
                return .absolute(value)
            }

            let name: String
            if bytes[i] == UInt8(ascii: "'") {
                // gdb quoting, for names with characters an expression would split on.
                guard let close = bytes[(i + 1)...].firstIndex(of: UInt8(ascii: "'")) else {
                    throw fail(bytes.count, "' closing the quoted symbol name")
                }
                guard close > i + 1 else { throw fail(close, "a symbol name inside the quotes") }
                name = String(decoding: bytes[(i + 1)..<close], as: UTF8.self)
                i = close + 1
            } else {
                guard i < bytes.count, AddressExpression.isNameStart(bytes[i]) else {
                    if i >= bytes.count { throw fail(i, "a symbol name after the module") }
                    if bytes[i] >= UInt8(ascii: "0") && bytes[i] <= UInt8(ascii: "9") {
                        throw fail(i, "a symbol name or an address (0x..., or at least 8 hex digits)")
                    }
                    throw fail(i, "a symbol name or an address")
                }
                name = String(decoding: word, as: UTF8.self)
                i = end
            }

            var module: String? = prefixModule
            var ordinal: Int? = nil
            // `/N` and `[module]`, each at most once, in either order.
            while true {
                let save = i
                skipSpaces()
                guard i < bytes.count else { break }
                if bytes[i] == UInt8(ascii: "/"), ordinal == nil {
                    i += 1
                    let digitsStart = i
                    var value = 0
                    while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") {
                        guard value < 1_000_000_000 else { throw fail(digitsStart, "a smaller ordinal") }
                        value = value * 10 + Int(bytes[i] - UInt8(ascii: "0"))
                        i += 1
                    }
                    guard i > digitsStart else { throw fail(i, "an ordinal (1, 2, ...) after /") }
                    guard value >= 1 else { throw fail(digitsStart, "an ordinal counting from 1") }
                    ordinal = value
                } else if bytes[i] == UInt8(ascii: "["), module == nil {
                    i += 1
                    let moduleStart = i
                    while i < bytes.count, AddressExpression.isModuleByte(bytes[i]) { i += 1 }
                    if i >= bytes.count || bytes[i] != UInt8(ascii: "]") {
                        // Not closed: a `+` there was an offset's sign (`name [mod+4`), not part of a name.
                        i = moduleStart
                        while i < bytes.count, AddressExpression.isModuleByte(bytes[i]), bytes[i] != UInt8(ascii: "+") { i += 1 }
                    }
                    guard i > moduleStart else { throw fail(i, "a module name after [") }
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "]") else { throw fail(i, "] closing the module name") }
                    module = String(decoding: bytes[moduleStart..<i], as: UTF8.self)
                    i += 1
                } else if bytes[i] == UInt8(ascii: "["), prefixModule != nil {
                    throw fail(i, "one module: `module:symbol` or `symbol [module]`, not both")
                } else {
                    i = save
                    break
                }
            }
            return .symbol(name: name, module: module, ordinal: ordinal)
        }

        /// Consumes `module:` when the text starts with a module name, a colon and then a symbol
        /// name (or a quoted one); otherwise consumes nothing and returns nil.
        mutating func parseModulePrefix() -> String? {
            guard i < bytes.count, AddressExpression.isNameStart(bytes[i]) else { return nil }
            var colon = i
            while colon < bytes.count, AddressExpression.isModuleByte(bytes[colon]) { colon += 1 }
            guard colon < bytes.count, bytes[colon] == UInt8(ascii: ":"), colon + 1 < bytes.count,
                  AddressExpression.isNameStart(bytes[colon + 1]) || bytes[colon + 1] == UInt8(ascii: "'") else { return nil }
            let module = String(decoding: bytes[i..<colon], as: UTF8.self)
            i = colon + 1
            return module
        }

        /// `0x` hex or decimal digits, at `i`.
        mutating func parseNumber(what: String) throws(SymbolError) -> UInt64 {
            let start = i
            var value: UInt64 = 0
            if i + 1 < bytes.count, bytes[i] == UInt8(ascii: "0"), bytes[i + 1] | 0x20 == UInt8(ascii: "x") {
                i += 2
                let digitsStart = i
                while i < bytes.count, let digit = SymbolLineParser.hexValue(bytes[i]) {
                    guard value >> 60 == 0 else { throw fail(start, "\(what) of at most 16 hex digits") }
                    value = value << 4 | UInt64(digit)
                    i += 1
                }
                guard i > digitsStart else { throw fail(i, "hex digits after 0x") }
            } else {
                while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") {
                    let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times10.addingReportingOverflow(UInt64(bytes[i] - UInt8(ascii: "0")))
                    guard !o1, !o2 else { throw fail(start, "\(what) that fits in 64 bits") }
                    value = sum
                    i += 1
                }
                guard i > start else { throw fail(i, what) }
            }
            // `0x2fz`, `47q`: digits must end at an operator, a space or the end.
            if i < bytes.count, AddressExpression.isNameByte(bytes[i]) { throw fail(i, "\(what) to end here") }
            return value
        }
    }

    // MARK: Resolving

    /// The address this expression names in `index`, and the symbol containing it (the named
    /// symbol itself when the offset stays inside it).
    public func resolve(in index: SymbolIndex) throws(SymbolError) -> ResolvedAddress {
        switch base {
        case .absolute(let address):
            let target = try Self.add(address, offset, expression: self)
            let hit = index.symbolize(target)
            return ResolvedAddress(address: target, symbol: hit?.symbol, offset: hit?.offset ?? 0)
        case let .symbol(name, module, ordinal):
            let symbol = try index.resolve(name: name, module: module, ordinal: ordinal)
            let target = try Self.add(symbol.address, offset, expression: self)
            // Keep the user's symbol when the offset stays inside it (or its extent is unknown);
            // otherwise say where the address really is.
            if offset >= 0, symbol.size == nil || AddressTable.contains(symbol, target) {
                return ResolvedAddress(address: target, symbol: symbol, offset: UInt64(offset))
            }
            let hit = index.symbolize(target, section: symbol.section)
            return ResolvedAddress(address: target, symbol: hit?.symbol, offset: hit?.offset ?? 0)
        }
    }

    static func add(_ base: UInt64, _ offset: Int64, expression: AddressExpression) throws(SymbolError) -> UInt64 {
        let (result, overflow) = offset >= 0 ? base.addingReportingOverflow(UInt64(offset))
                                             : base.subtractingReportingOverflow(offset.magnitude)
        guard !overflow else { throw .addressOverflow(expression: expression.description, base: base, offset: offset) }
        return result
    }
}

/// Where an expression lands: the address, and the symbol containing it with the offset into it
/// (nil when no symbol contains the address).
public struct ResolvedAddress: Sendable, Hashable, CustomStringConvertible {
    public var address: UInt64
    public var symbol: SymbolRecord?
    public var offset: UInt64

    public init(address: UInt64, symbol: SymbolRecord?, offset: UInt64) {
        self.address = address
        self.symbol = symbol
        self.offset = offset
    }

    /// `nfs_flock+0x2f`, or the bare address when no symbol contains it.
    public var location: String {
        guard let symbol else { return Hex.address(address) }
        return offset == 0 ? symbol.name : symbol.name + "+" + Hex.address(offset)
    }

    /// `0xffffffffc03b228f <nfs_flock+0x2f> [nfs]`
    public var description: String {
        var text = Hex.address(address)
        if symbol != nil { text += " <\(location)>" }
        if let module = symbol?.module { text += " [\(module)]" }
        return text
    }
}
