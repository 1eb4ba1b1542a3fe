import ELF
import Foundation
import Symbols
import Testing
import TestSupport

@Suite struct AddressExpressionTests {
    typealias E = AddressExpression

    @Test(arguments: [
        ("0xffffffff810bee50", E(base: .absolute(0xffffffff810bee50))),
        ("ffffffff810bee50", E(base: .absolute(0xffffffff810bee50))),
        ("0000000000401136", E(base: .absolute(0x401136))),
        ("*0xffffffff810bee50", E(base: .absolute(0xffffffff810bee50))),
        ("  * 0x10+0x4 ", E(base: .absolute(0x10), offset: 4)),
        ("nfs_flock", E(base: .symbol(name: "nfs_flock", module: nil, ordinal: nil))),
        ("nfs_flock+0x2f", E(base: .symbol(name: "nfs_flock", module: nil, ordinal: nil), offset: 0x2f)),
        ("nfs_flock [nfs]+0x2f", E(base: .symbol(name: "nfs_flock", module: "nfs", ordinal: nil), offset: 0x2f)),
        ("nfs_flock[nfs]+0x2f", E(base: .symbol(name: "nfs_flock", module: "nfs", ordinal: nil), offset: 0x2f)),
        ("nfs_flock/2+0x10", E(base: .symbol(name: "nfs_flock", module: nil, ordinal: 2), offset: 0x10)),
        ("nfs_flock/2 [nfs] + 0x10", E(base: .symbol(name: "nfs_flock", module: "nfs", ordinal: 2), offset: 0x10)),
        ("nfs_flock [nfs]/2", E(base: .symbol(name: "nfs_flock", module: "nfs", ordinal: 2))),
        ("filelayout_read_pagelist [nfs_layout_nfsv41_files]", E(base: .symbol(name: "filelayout_read_pagelist", module: "nfs_layout_nfsv41_files", ordinal: nil))),
        ("sym+47", E(base: .symbol(name: "sym", module: nil, ordinal: nil), offset: 47)),
        ("sym-0x4", E(base: .symbol(name: "sym", module: nil, ordinal: nil), offset: -4)),
        ("sym+0x10-4", E(base: .symbol(name: "sym", module: nil, ordinal: nil), offset: 12)),
        ("nfs_flock.cold+0x3", E(base: .symbol(name: "nfs_flock.cold", module: nil, ordinal: nil), offset: 3)),
        ("*nfs_flock+1", E(base: .symbol(name: "nfs_flock", module: nil, ordinal: nil), offset: 1)),
        ("memcpy@@GLIBC_2.14", E(base: .symbol(name: "memcpy@@GLIBC_2.14", module: nil, ordinal: nil))),
        ("'deadbeefcafe'+8", E(base: .symbol(name: "deadbeefcafe", module: nil, ordinal: nil), offset: 8)),
        ("beef", E(base: .symbol(name: "beef", module: nil, ordinal: nil))),
    ])
    func parses(text: String, expected: AddressExpression) throws {
        #expect(try E.parse(text) == expected)
        // The canonical spelling parses back to the same expression.
        #expect(try E.parse(expected.description) == expected)
    }

    @Test func canonicalSpelling() throws {
        #expect(try E.parse("nfs_flock[nfs]/2+47").description == "nfs_flock/2 [nfs]+0x2f")
        #expect(try E.parse("ffffffff810bee50-16").description == "0xffffffff810bee50-0x10")
        #expect(try E.parse("'ffffffff810bee50'").description == "'ffffffff810bee50'")
    }

    @Test(arguments: [
        ("", 1, "an address or a symbol name", "end of text"),
        ("nfs_flock+", 11, "an offset (0x2f or decimal 47)", "end of text"),
        ("nfs_flock+0x", 13, "hex digits after 0x", "end of text"),
        ("nfs_flock+0x2fz", 15, "an offset (0x2f or decimal 47) to end here", "\"z\""),
        ("nfs_flock*2", 10, "+OFFSET, -OFFSET or the end", "\"*2\""),
        ("nfs_flock [nfs+4", 15, "] closing the module name", "\"+4\""),
        ("nfs_flock []", 12, "a module name after [", "\"]\""),
        ("nfs_flock/0", 11, "an ordinal counting from 1", "\"0\""),
        ("nfs_flock/x", 11, "an ordinal (1, 2, ...) after /", "\"x\""),
        ("1234+4", 1, "a symbol name or an address (0x..., or at least 8 hex digits)", "\"1234\""),
        ("ffffffff810bee50aa", 1, "an address of at most 16 hex digits", "\"ffffffff810bee50aa\""),
        ("0x1ffffffff810bee50", 1, "an address of at most 16 hex digits", "\"0x1ffffffff810bee50\""),
        ("sym+99999999999999999999", 5, "an offset (0x2f or decimal 47) that fits in 64 bits", "\"99999999999999999999\""),
        ("sym+0x8000000000000000", 5, "an offset below 2^63", "\"0x8000000000000000\""),
        ("'unclosed+4", 12, "' closing the quoted symbol name", "end of text"),
        ("%rip", 1, "a symbol name or an address", "\"%rip\""),
    ])
    func rejects(text: String, column: Int, expected: String, found: String) {
        #expect(throws: SymbolError.badExpression(text: text, column: column, expected: expected, found: found)) {
            try E.parse(text)
        }
    }

    @Test func errorMessageNamesTheColumn() {
        do {
            _ = try E.parse("nfs_flock+0x2fz")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)" == "address expression \"nfs_flock+0x2fz\" column 15: expected an offset (0x2f or decimal 47) to end here, found \"z\"")
        }
    }

    /// Resolution against the symbols of a real program (its `nm -n`), checked with gdb.
    @Test func resolvesAgainstProgramSymbols() throws {
        let program = try SystemMapTests.buildProgram()
        let index = SymbolIndex(try SystemMapParser.parse(SymbolsFixtures.read(program.systemMap), file: "System.map"))
        let main = try index.resolve(name: "main")

        let plus = try E.parse("main+16").resolve(in: index)
        #expect(plus.address == main.address + 16 && plus.symbol?.name == "main" && plus.offset == 16)
        #expect(plus.location == "main+0x10")

        let absolute = try E.parse(Hex.address(main.address + 5)).resolve(in: index)
        #expect(absolute.symbol?.name == "main" && absolute.offset == 5)

        // Past the end of a function: the address is described by what really contains it.
        let add = try index.resolve(name: "add")
        let pick = try index.resolve(name: "pick")
        let beyond = try E.parse("add+\(pick.address - add.address + 2)").resolve(in: index)
        #expect(beyond.address == pick.address + 2)
        let gdb = try GDB.infoSymbol([beyond.address], file: program.executable)
        #expect(gdb[0] == GDB.Answer(name: beyond.symbol?.name ?? "?", offset: beyond.offset))

        // Negative offsets land in the previous symbol (nm's order; a System.map has no sizes, so
        // the previous symbol reaches up to main).
        let before = try E.parse("main-4").resolve(in: index)
        let nm = try SystemMapTests.nmDefined(program.executable)
        let previous = try #require(nm.last { $0.address < main.address })
        #expect(before.symbol?.name == previous.name && before.offset == main.address - 4 - previous.address)

        #expect(throws: SymbolError.notFound(name: "no_such_symbol", module: nil, elsewhere: [])) {
            try E.parse("no_such_symbol+4").resolve(in: index)
        }
        #expect(throws: SymbolError.addressOverflow(expression: "0xffffffffffffffff+0x1", base: .max, offset: 1)) {
            try E.parse("0xffffffffffffffff+1").resolve(in: index)
        }
    }

    /// Module-qualified and numbered names against kallsyms lines in the lab's shape.
    @Test func resolvesModuleAndOrdinal() throws {
        let text = """
            ffffffff81000000 T _text
            ffffffff81200000 t init_once
            ffffffff81200100 T other
            ffffffffc03b2260 t nfs_flock\t[nfs]
            ffffffffc03b23a0 t nfs_flock.cold\t[nfs]
            ffffffffc03b3000 t init_once\t[nfs]
            ffffffffc03b3040 t nfs_end\t[nfs]

            """
        let index = SymbolIndex(try KallsymsParser.parse(Array(text.utf8), file: "crafted"))
        let flock = try E.parse("nfs_flock [nfs]+0x2f").resolve(in: index)
        #expect(flock.address == 0xffffffffc03b228f && flock.location == "nfs_flock+0x2f")
        #expect(flock.description == "0xffffffffc03b228f <nfs_flock+0x2f> [nfs]")
        #expect(try E.parse("init_once [nfs]+4").resolve(in: index).address == 0xffffffffc03b3004)
        #expect(try E.parse("init_once/1+4").resolve(in: index).address == 0xffffffff81200004)
        #expect(try E.parse("init_once/2").resolve(in: index).symbol?.module == "nfs")
        #expect(try E.parse("init_once [vmlinux]").resolve(in: index).address == 0xffffffff81200000)
        #expect(throws: SymbolError.moduleMismatch(name: "init_once", ordinal: 1, expected: "nfs", found: nil)) {
            try E.parse("init_once/1 [nfs]").resolve(in: index)
        }
        #expect(throws: SymbolError.notFound(name: "nfs_flock", module: "sunrpc", elsewhere: ["nfs_flock at 0xffffffffc03b2260 [nfs]"])) {
            try E.parse("nfs_flock [sunrpc]").resolve(in: index)
        }
        do {
            _ = try E.parse("init_once+4").resolve(in: index)
            Issue.record("expected ambiguity")
        } catch {
            #expect("\(error)" == """
                init_once is ambiguous: 2 symbols have this name; pick one of:
                  init_once/1 at 0xffffffff81200000
                  init_once/2 at 0xffffffffc03b3000 [nfs]
                """)
        }
    }
}
