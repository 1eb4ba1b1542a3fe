import ELF
import Foundation
import Testing
import TestSupport

/// `suture symbols` end to end: the built binary, its JSON and columns, its errors and exit codes.
@Suite struct SymbolsCommandTests {
    static var binary: URL {
        #if DEBUG
        Fixtures.repoRoot.appendingPathComponent(".build/debug/suture")
        #else
        Fixtures.repoRoot.appendingPathComponent(".build/release/suture")
        #endif
    }

    static func suture(_ arguments: [String]) throws -> Fixtures.Output {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw Fixtures.Failure("\(binary.path) is missing: run `swift build` first")
        }
        return try Fixtures.run(binary.path, ["symbols"] + arguments)
    }

    struct Row: Decodable {
        struct Symbol: Decodable {
            var name: String
            var address: String
            var kind: String
            var size: String?
            var module: String?
            var section: String?
            var isFunction: Bool
        }
        var query: String
        var address: String
        var symbol: Symbol?
        var offset: UInt64
        var location: String?
    }

    static func rows(_ output: Fixtures.Output) throws -> [Row] {
        try JSONDecoder().decode([Row].self, from: output.stdoutData)
    }

    @Test func systemMapJSON() throws {
        let program = try SystemMapTests.buildProgram()
        let nm = try SystemMapTests.nmDefined(program.executable)
        let main = try #require(nm.first { $0.name == "main" })
        let out = try Self.suture(["--system-map", program.systemMap.path, "--json", "main", "main+16", Hex.address(main.address + 3)])
        #expect(out.status == 0, "\(out.stderr)")
        let rows = try Self.rows(out)
        try #require(rows.count == 3)
        #expect(rows[0].query == "main" && rows[0].address == Hex.address(main.address) && rows[0].location == nil)
        #expect(rows[0].symbol?.name == "main" && rows[0].symbol?.kind == "T" && rows[0].symbol?.isFunction == true)
        #expect(rows[1].address == Hex.address(main.address + 16) && rows[1].offset == 16 && rows[1].location == "main+0x10")
        #expect(rows[2].location == "main+0x3")
    }

    @Test func elfModuleJSON() throws {
        let kernel = try Fixtures.debianKernel()
        let nm = try Fixtures.check("nm", ["-S", kernel.nfsKo.path])
        let line = try #require(SymbolsFixtures.lines(nm).first { $0.hasSuffix(" nfs_flock") })
        let address = try #require(UInt64(line.prefix(16), radix: 16))
        let size = try #require(UInt64(line.split(separator: " ")[1], radix: 16))

        let out = try Self.suture(["--elf", kernel.nfsKo.path, "--json", "nfs_flock [nfs]+0x2f"])
        #expect(out.status == 0, "\(out.stderr)")
        let row = try #require(try Self.rows(out).first)
        #expect(row.address == Hex.address(address + 0x2f) && row.location == "nfs_flock+0x2f")
        #expect(row.symbol?.module == "nfs" && row.symbol?.section == ".text" && row.symbol?.size == Hex.address(size))
    }

    /// Without a source the command reads /proc/kallsyms.
    @Test func defaultSourceIsProcKallsyms() throws {
        let grep = try Fixtures.check("grep", ["-m1", " T _text$", "/proc/kallsyms"])
        let out = try Self.suture(["--json", "_text"])
        #expect(out.status == 0, "\(out.stderr)")
        let row = try #require(try Self.rows(out).first)
        #expect(row.address == Hex.address(UInt64(grep.prefix(16), radix: 16)!))
    }

    /// Columns line up: every cell of a column starts at the same character position.
    @Test func alignedColumns() throws {
        let program = try SystemMapTests.buildProgram()
        let out = try Self.suture(["--system-map", program.systemMap.path, "main", "counter", "zeroed+100", "pick.cold"])
        #expect(out.status == 0, "\(out.stderr)")
        let lines = SymbolsFixtures.lines(out.stdout).map(String.init)
        try #require(lines.count == 4)
        let nm = try SystemMapTests.nmDefined(program.executable)
        let zeroed = try #require(nm.first { $0.name == "zeroed" })
        #expect(lines[2].hasPrefix(Hex.padded(zeroed.address + 100) + "  B  "))
        #expect(lines[2].hasSuffix("zeroed+0x64"))
        // Columns 2-5 (type, size, module, name) start at the same offsets on every line.
        func starts(_ line: String) -> [Int] {
            var result: [Int] = []
            let chars = Array(line)
            for k in 1..<chars.count where chars[k] != " " && chars[k - 1] == " " { result.append(k) }
            return Array(result.prefix(4))
        }
        let first = starts(lines[0])
        #expect(first.count == 4)
        for line in lines { #expect(starts(line) == first, "\(line)") }
    }

    @Test func errorsGoToStderrWithExitCode1() throws {
        let program = try SystemMapTests.buildProgram()
        let map = program.systemMap.path

        let missing = try Self.suture(["--system-map", map, "main", "no_such_symbol"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no_such_symbol: no symbol named no_such_symbol"))
        #expect(missing.stdout.contains(" main"))          // the good query is still answered

        let garbage = try Self.suture(["--system-map", map, "main+0x2fz"])
        #expect(garbage.status == 1)
        #expect(garbage.stderr.contains("column 10") && garbage.stdout.isEmpty)

        let nowhere = try Self.suture(["--system-map", map, "0x10"])
        #expect(nowhere.status == 1 && nowhere.stderr.contains("no symbol contains 0x10"))

        let noFile = try Self.suture(["--kallsyms", "/nonexistent/kallsyms", "_text"])
        #expect(noFile.status == 1 && noFile.stderr.contains("/nonexistent/kallsyms"))

        // Usage errors exit 2 with usage text.
        let twoSources = try Self.suture(["--system-map", map, "--kallsyms", map, "main"])
        #expect(twoSources.status == 2 && twoSources.stderr.contains("at most one of"))
        let nothing = try Self.suture([])
        #expect(nothing.status == 2 && nothing.stderr.contains("Usage:"))
    }

    /// An unprivileged reader sees zero addresses: the command says why instead of printing zeros.
    @Test func unprivilegedKallsymsIsExplained() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary.path) else {
            throw Fixtures.Failure("\(Self.binary.path) is missing: run `swift build` first")
        }
        let out = try Fixtures.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups",
                                               Self.binary.path, "symbols", "_text"])
        #expect(out.status == 1)
        #expect(out.stderr.contains("addresses are zero") && out.stderr.contains("kptr_restrict"))
    }

    @Test func ambiguousNameListsCandidates() throws {
        let folder = try Fixtures.temporaryFolder("suture-cli-dups")
        let program = try SymbolsFixtures.twoScalesProgram(in: folder)
        let scales = try SystemMapTests.nmDefined(program).filter { $0.name == "scale" }
        try #require(scales.count == 2)

        // A bare name lists both, numbered; an offset needs one of them.
        let listed = try Self.suture(["--elf", program.path, "--json", "scale"])
        #expect(try Self.rows(listed).map(\.location) == ["scale/1", "scale/2"])
        let ambiguous = try Self.suture(["--elf", program.path, "scale+1"])
        #expect(ambiguous.status == 1)
        #expect(ambiguous.stderr.contains("scale/1 at \(Hex.address(scales[0].address))"))
        #expect(ambiguous.stderr.contains("scale/2 at \(Hex.address(scales[1].address))"))
        let second = try Self.suture(["--elf", program.path, "--json", "scale/2+1"])
        #expect(try Self.rows(second).first?.address == Hex.address(scales[1].address + 1))
    }
}
