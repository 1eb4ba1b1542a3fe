import ELF
import Foundation
import Symbols
import Testing
import TestSupport

/// System.map files made by `nm -n` from gcc-built programs, checked against nm, gdb and addr2line.
@Suite struct SystemMapTests {
    struct Program {
        let folder: URL
        let executable: URL
        let systemMap: URL
    }

    static func buildProgram(flags: [String] = ["-O2", "-no-pie"]) throws -> Program {
        let folder = try Fixtures.temporaryFolder("suture-symbols")
        let executable = try Fixtures.compileC(SymbolsFixtures.programSource, name: "program", flags: flags, in: folder)
        let map = folder.appendingPathComponent("System.map")
        try Fixtures.check("sh", ["-c", "nm -n '\(executable.path)' > '\(map.path)'"])
        return Program(folder: folder, executable: executable, systemMap: map)
    }

    /// nm's own view of the defined symbols: (address, letter, name), and sizes from `nm -S`.
    static func nmDefined(_ file: URL) throws -> [(address: UInt64, kind: Character, name: String, size: UInt64?)] {
        try SymbolsFixtures.lines(Fixtures.check("nm", ["-nS", "--defined-only", file.path])).map { line in
            let f = line.split(separator: " ")
            // With -S: "ADDR SIZE T name" or "ADDR T name" (no size).
            if f.count == 4 {
                return (UInt64(f[0], radix: 16)!, Character(String(f[2])), String(f[3]), UInt64(f[1], radix: 16)!)
            }
            return (UInt64(f[0], radix: 16)!, Character(String(f[1])), String(f[2]), nil)
        }
    }

    @Test func parsesNmOutputLikeNmItself() throws {
        let program = try Self.buildProgram()
        let text = try SymbolsFixtures.read(program.systemMap)
        // The map holds undefined symbols too (blank address): they are skipped.
        #expect(try Fixtures.check("grep", ["-c", "^ ", program.systemMap.path]).trimmingWhitespace() != "0")
        let records = try SystemMapParser.parse(text, file: program.systemMap.path)
        let nm = try Self.nmDefined(program.executable)
        #expect(records.count == nm.count)
        for (record, expected) in zip(records, nm) {
            #expect(record.address == expected.address && record.kind == expected.kind && record.name == expected.name)
            #expect(record.module == nil && record.section == nil)
        }
        #expect(records.first { $0.name == "main" }?.isFunction == true)
        #expect(records.first { $0.name == "counter" }?.isFunction == false)
    }

    /// Inferred sizes reach at least nm's real size (padding may follow a function), and every
    /// byte inside a sized symbol maps back to it.
    @Test func inferredSizesCoverNmSizes() throws {
        let program = try Self.buildProgram()
        let index = SymbolIndex(try SystemMapParser.parse(SymbolsFixtures.read(program.systemMap), file: "System.map"))
        let nm = try Self.nmDefined(program.executable)
        var checked = 0
        for symbol in nm {
            guard let size = symbol.size, size > 0 else { continue }
            // Aliases (several names at one address) may resolve to either name.
            guard nm.filter({ $0.address == symbol.address }).count == 1 else { continue }
            let record = try index.resolve(name: symbol.name)
            #expect((record.size ?? 0) >= size, "\(symbol.name)")
            for address in [symbol.address, symbol.address + size / 2, symbol.address + size - 1] {
                let hit = index.symbolize(address)
                #expect(hit?.symbol.name == symbol.name && hit?.offset == address - symbol.address,
                        "\(Hex.address(address)) in \(symbol.name)")
            }
            checked += 1
        }
        #expect(checked >= 8)
    }

    /// Address → symbol+offset against gdb's `info symbol` on the same executable.
    @Test func symbolizeAgreesWithGdb() throws {
        let program = try Self.buildProgram()
        let index = SymbolIndex(try SystemMapParser.parse(SymbolsFixtures.read(program.systemMap), file: "System.map"))
        let nm = try Self.nmDefined(program.executable)
        var addresses: [UInt64] = []
        for symbol in nm {
            guard let size = symbol.size, size > 1, nm.filter({ $0.address == symbol.address }).count == 1 else { continue }
            addresses += [symbol.address, symbol.address + 1, symbol.address + size - 1]
        }
        try #require(addresses.count >= 15)
        let answers = try GDB.infoSymbol(addresses, file: program.executable)
        for (address, answer) in zip(addresses, answers) {
            let hit = try #require(index.symbolize(address), "\(Hex.address(address))")
            #expect(answer == GDB.Answer(name: GDB.printName(hit.symbol.name), offset: hit.offset), "\(Hex.address(address))")
        }
    }

    /// Address → function against `addr2line -f` (without debug info it reads the symbol table).
    @Test func functionContainingAgreesWithAddr2line() throws {
        let program = try Self.buildProgram()
        let index = SymbolIndex(try SystemMapParser.parse(SymbolsFixtures.read(program.systemMap), file: "System.map"))
        let functions = try Self.nmDefined(program.executable).filter { ($0.kind == "T" || $0.kind == "t") && ($0.size ?? 0) > 2 }
        let addresses = functions.flatMap { [$0.address + 1, $0.address + $0.size! - 1] }
        try #require(addresses.count >= 8)
        let output = try Fixtures.check("addr2line", ["-f", "-e", program.executable.path] + addresses.map(Hex.address))
        // addr2line prints two lines per address: function, then file:line.
        let lines = SymbolsFixtures.lines(output)
        try #require(lines.count == 2 * addresses.count)
        for (k, address) in addresses.enumerated() {
            #expect(index.function(containing: address)?.name == String(lines[2 * k]), "\(Hex.address(address))")
        }
        // gcc -O2 moved pick's unlikely branch into pick.cold: a function of its own.
        let cold = try index.resolve(name: "pick.cold")
        #expect(index.function(containing: cold.address + 1)?.name == "pick.cold")
        #expect(try index.resolve(name: "pick").address != cold.address)

        // Data is not a function: counter lies in .data.
        let counter = try index.resolve(name: "counter")
        #expect(index.function(containing: counter.address) == nil)
        #expect(index.symbolize(counter.address)?.symbol.name == "counter")
    }

    /// Two objects with the same static function name linked into one program: two symbols,
    /// numbered in address order.
    @Test func duplicateStaticFunctions() throws {
        let folder = try Fixtures.temporaryFolder("suture-dups")
        let first = try Fixtures.compileC("""
            static __attribute__((noinline)) int scale(int x) { return x * 3; }
            int first(int x) { return scale(x) + 1; }
            """, name: "first", flags: ["-O1", "-c"], in: folder)
        let second = try Fixtures.compileC("""
            static __attribute__((noinline)) int scale(int x) { return x * 5 + 2; }
            int second(int x) { return scale(x) - 1; }
            """, name: "second", flags: ["-O1", "-c"], in: folder)
        let main = try Fixtures.compileC("""
            int first(int), second(int);
            int main(int argc, char **argv) { return first(argc) + second(argc); }
            """, name: "main", flags: ["-O1", "-c"], in: folder)
        let program = folder.appendingPathComponent("program")
        try Fixtures.check("gcc", ["-o", program.path, main.path, first.path, second.path])
        let map = try Fixtures.check("nm", ["-n", program.path])

        // nm's order is address order: the oracle for /1 and /2.
        let expected = SymbolsFixtures.lines(map).filter { $0.hasSuffix(" t scale") }
            .map { UInt64($0.prefix(16), radix: 16)! }
        try #require(expected.count == 2)

        let index = SymbolIndex(try SystemMapParser.parse(Array(map.utf8), file: "nm -n program"))
        #expect(index.symbols(named: "scale").map(\.address) == expected)
        #expect(try index.resolve(name: "scale", ordinal: 2).address == expected[1])
        #expect(try index.resolve(name: "scale", ordinal: 1).address == expected[0])
        #expect(throws: SymbolError.ambiguous(name: "scale", module: nil, candidates: [
            "scale/1 at \(Hex.address(expected[0]))",
            "scale/2 at \(Hex.address(expected[1]))",
        ])) { try index.resolve(name: "scale") }
        #expect(throws: SymbolError.ordinalOutOfRange(name: "scale", ordinal: 3, count: 2)) {
            try index.resolve(name: "scale", ordinal: 3)
        }
        let resolved = try AddressExpression.parse("scale/2+4").resolve(in: index)
        #expect(resolved.address == expected[1] + 4 && resolved.location == "scale+0x4")
    }
}

/// gdb's `info symbol ADDR`, run in batch over a file.
enum GDB {
    struct Answer: Equatable, CustomStringConvertible {
        var name: String
        var offset: UInt64
        var description: String { "\(name)+\(offset)" }
    }

    /// How gdb prints a minimal symbol's name: a function-local static's `completed.0` as `completed`.
    static func printName(_ name: String) -> String {
        guard let dot = name.lastIndex(of: "."), dot > name.startIndex,
              name[name.index(after: dot)...].allSatisfy(\.isNumber), name.index(after: dot) < name.endIndex,
              name[..<dot].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" })
        else { return name }
        return String(name[..<dot])
    }

    /// One answer per address ("main + 15 in section .text" → main, 15); nil for "No symbol matches".
    static func infoSymbol(_ addresses: [UInt64], file: URL) throws -> [Answer?] {
        let args = ["-batch", "-nx"] + addresses.flatMap { ["-ex", "info symbol \(Hex.address($0))"] } + [file.path]
        let lines = SymbolsFixtures.lines(try Fixtures.check("gdb", args))
        try #require(lines.count == addresses.count, "gdb said: \(lines)")
        return lines.map { line in
            if line.hasPrefix("No symbol matches") { return nil }
            let words = line.split(separator: " ")
            // gdb writes gcc's `pick.cold` as `pick[cold]`.
            var name = String(words[0])
            if name.hasSuffix("[cold]") { name = String(name.dropLast("[cold]".count)) + ".cold" }
            if words.count >= 3, words[1] == "+" { return Answer(name: name, offset: UInt64(words[2])!) }
            return Answer(name: name, offset: 0)
        }
    }
}
