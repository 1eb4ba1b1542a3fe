import Foundation
import Symbols
import Testing

/// `module:symbol`, the spelling for a process' libraries (`libfoo.so:parse_header+0x1c`), next to
/// the kernel's `symbol [module]`: both parse to the same expression, and the older forms keep
/// their meaning.
@Suite struct ModuleExpressionTests {
    typealias E = AddressExpression

    @Test(arguments: [
        ("libfoo.so:parse_header+0x1c", E(base: .symbol(name: "parse_header", module: "libfoo.so", ordinal: nil), offset: 0x1c)),
        ("libc.so.6:printf", E(base: .symbol(name: "printf", module: "libc.so.6", ordinal: nil))),
        ("libstdc++.so.6:_ZdlPv+4", E(base: .symbol(name: "_ZdlPv", module: "libstdc++.so.6", ordinal: nil), offset: 4)),
        ("ld-linux-x86-64.so.2:_dl_start", E(base: .symbol(name: "_dl_start", module: "ld-linux-x86-64.so.2", ordinal: nil))),
        ("nfs:nfs_flock+0x2f", E(base: .symbol(name: "nfs_flock", module: "nfs", ordinal: nil), offset: 0x2f)),
        ("libfoo.so:helper/2+0x10", E(base: .symbol(name: "helper", module: "libfoo.so", ordinal: 2), offset: 0x10)),
        ("libfoo.so:'odd name'+1", E(base: .symbol(name: "odd name", module: "libfoo.so", ordinal: nil), offset: 1)),
        // A symbol that looks like hex after a module is a name.
        ("libfoo.so:deadbeefcafe", E(base: .symbol(name: "deadbeefcafe", module: "libfoo.so", ordinal: nil))),
        ("*libfoo.so:parse_header", E(base: .symbol(name: "parse_header", module: "libfoo.so", ordinal: nil))),
    ])
    func parses(text: String, expected: AddressExpression) throws {
        #expect(try E.parse(text) == expected)
        // The canonical spelling (`name [module]`) parses back to the same expression.
        #expect(try E.parse(expected.description) == expected)
    }

    @Test func bothSpellingsAgree() throws {
        #expect(try E.parse("libfoo.so:parse_header+0x1c") == E.parse("parse_header [libfoo.so]+0x1c"))
        #expect(try E.parse("libfoo.so:parse_header+0x1c").description == "parse_header [libfoo.so]+0x1c")
        #expect(try E.parse("x [libstdc++.so.6]").description == "x [libstdc++.so.6]")
    }

    @Test(arguments: [
        // The existing forms are untouched: addresses, offsets, and a colon that starts no symbol.
        ("0xffffffff810bee50", E(base: .absolute(0xffffffff810bee50))),
        ("ffffffff810bee50+4", E(base: .absolute(0xffffffff810bee50), offset: 4)),
        ("nfs_flock [nfs]+0x2f", E(base: .symbol(name: "nfs_flock", module: "nfs", ordinal: nil), offset: 0x2f)),
        ("sym-0x4", E(base: .symbol(name: "sym", module: nil, ordinal: nil), offset: -4)),
    ])
    func olderFormsKeepTheirMeaning(text: String, expected: AddressExpression) throws {
        #expect(try E.parse(text) == expected)
    }

    @Test(arguments: [
        ("libfoo.so:", 10, "+OFFSET, -OFFSET or the end", "\":\""),
        ("libfoo.so:+4", 10, "+OFFSET, -OFFSET or the end", "\":\""),
        ("libfoo.so:parse [libfoo.so]", 17, "one module: `module:symbol` or `symbol [module]`, not both", "\"[libfoo.so]\""),
        ("libfoo.so:0x10", 10, "+OFFSET, -OFFSET or the end", "\":0x10\""),
    ])
    func badModuleForms(text: String, column: Int, expected: String, found: String) {
        #expect(throws: SymbolError.badExpression(text: text, column: column, expected: expected, found: found)) {
            try E.parse(text)
        }
    }

    @Test func resolvesWithinTheModule() throws {
        let index = SymbolIndex([
            SymbolRecord(name: "parse_header", address: 0x5555_0000_1000, kind: "T", size: 0x40),
            SymbolRecord(name: "parse_header", address: 0x7f00_0000_2000, kind: "T", size: 0x40, module: "libfoo.so"),
        ])
        let resolved = try E.parse("libfoo.so:parse_header+0x1c").resolve(in: index)
        #expect(resolved.address == 0x7f00_0000_201c)
        #expect(resolved.symbol?.module == "libfoo.so")
        #expect(throws: SymbolError.self) { try E.parse("parse_header").resolve(in: index) }
        #expect(throws: SymbolError.notFound(name: "parse_header", module: "libbar.so",
                                             elsewhere: ["parse_header/1 at 0x555500001000", "parse_header/2 at 0x7f0000002000 [libfoo.so]"])) {
            try E.parse("libbar.so:parse_header").resolve(in: index)
        }
    }
}
