import ELF
import Foundation
import Symbols
import Testing
import TestSupport

@Suite struct KASLRTests {
    /// A PIE prints its own functions' run-time addresses as kallsyms lines and waits; its load
    /// bias, read from /proc/PID/maps, is the slide between those and the program's `nm` symbols.
    static let pieSource = """
        #include <stdio.h>
        #include <unistd.h>
        extern void _start(void);
        static __attribute__((noinline)) int twice(int x) { return 2 * x; }
        int counter = 3;
        int main(void) {
            printf("%016lx T main\\n", (unsigned long)(void *)main);
            printf("%016lx T _start\\n", (unsigned long)(void *)_start);
            printf("%016lx t twice\\n", (unsigned long)(void *)twice);
            printf("%016lx D counter\\n", (unsigned long)&counter);
            fflush(stdout);
            char c;
            /* Wait until the test has read /proc/PID/maps. */
            return read(0, &c, 1) < 0 ? 1 : twice(counter) - 6;
        }
        """

    struct LiveProgram {
        var executable: URL
        var liveText: String        // what the running process printed
        var loadBias: UInt64        // from /proc/PID/maps
    }

    static func runPIE() throws -> LiveProgram {
        let folder = try Fixtures.temporaryFolder("suture-kaslr")
        let executable = try Fixtures.compileC(pieSource, name: "pie", flags: ["-O2", "-fPIE", "-pie"], in: folder)
        let process = Process()
        process.executableURL = executable
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        defer {
            try? input.fileHandleForWriting.close()
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        var text = ""
        while text.split(separator: "\n").count < 4 {
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw Fixtures.Failure("the PIE exited early: \(text)") }
            text += String(decoding: chunk, as: UTF8.self)
        }
        // The lowest mapping of the executable, at file offset 0, starts at the load bias (a PIE is
        // linked at 0).
        let maps = try String(contentsOfFile: "/proc/\(process.processIdentifier)/maps", encoding: .utf8)
        let first = try #require(maps.split(separator: "\n").first { $0.hasSuffix(executable.path) },
                                 "no mapping of \(executable.path) in:\n\(maps)")
        let fields = first.split(separator: " ")
        try #require(fields[2] == "00000000", "first mapping not at offset 0: \(first)")
        let bias = try #require(UInt64(fields[0].split(separator: "-")[0], radix: 16))
        return LiveProgram(executable: executable, liveText: text, loadBias: bias)
    }

    static func reference(_ program: LiveProgram) throws -> SymbolIndex {
        let nm = try Fixtures.check("nm", ["-n", program.executable.path])
        return SymbolIndex(try SystemMapParser.parse(Array(nm.utf8), file: "nm -n pie"))
    }

    @Test func slideOfARunningPIEIsItsLoadBias() throws {
        let program = try Self.runPIE()
        #expect(program.loadBias != 0)
        // A module symbol named like an anchor must not count.
        let liveText = program.liveText + "ffffffffc0001000 T main\t[decoy]\n"
        let live = SymbolIndex(try KallsymsParser.parse(Array(liveText.utf8), file: "pie output"))
        let reference = try Self.reference(program)

        let slide = try KASLR.slide(live: live, reference: reference, anchors: ["main", "_start"])
        #expect(slide == Int64(program.loadBias))
        let anchors = try KASLR.anchorSlides(live: live, reference: reference, anchors: ["main", "_start"])
        #expect(anchors.map(\.name) == ["main", "_start"])

        // Every core symbol the process printed sits at its nm address plus the slide.
        for symbol in live.records where symbol.module == nil {
            let linked = try reference.resolve(name: symbol.name)
            #expect(symbol.address == linked.address &+ UInt64(bitPattern: slide), "\(symbol.name)")
        }
    }

    @Test func disagreeingAnchorsAreNamed() throws {
        let program = try Self.runPIE()
        // Move `_start` one page: the two anchors now disagree.
        var records = try KallsymsParser.parse(Array(program.liveText.utf8), file: "pie output")
        let k = try #require(records.firstIndex { $0.name == "_start" })
        records[k].address += 0x1000
        let live = SymbolIndex(records)
        let reference = try Self.reference(program)
        do {
            _ = try KASLR.slide(live: live, reference: reference, anchors: ["main", "_start"])
            Issue.record("expected disagreeing anchors")
        } catch let error as SymbolError {
            guard case let .anchorsDisagree(slides) = error else { Issue.record("\(error)"); return }
            #expect(slides.map(\.name) == ["main", "_start"])
            #expect(slides[0].slide == Int64(program.loadBias) && slides[1].slide == Int64(program.loadBias) + 0x1000)
            #expect("\(error)".contains("_start: live \(Hex.address(records[k].address))"))
        }
    }

    /// The host's kallsyms against a reference moved down by a known slide: the kernel anchors
    /// (`_text`, `_stext`, cross-checked with `startup_64`) give it back; module symbols, moved
    /// anywhere, do not interfere.
    @Test func kernelAnchorsOnHostKallsyms() throws {
        let file = try SymbolsFixtures.kallsymsSnapshot()
        let liveRecords = try KallsymsParser.parse(SymbolsFixtures.read(file), file: file.path)
        let slide: UInt64 = 0x1e00000
        var referenceRecords = liveRecords.map { r -> SymbolRecord in
            var r = r
            r.address = r.module == nil ? r.address - slide : 0xffffffffa0000000 &+ UInt64(r.name.utf8.count)
            return r
        }
        // A module symbol named _text in the reference must be ignored.
        referenceRecords.append(SymbolRecord(name: "_text", address: 0xffffffffc0000000, kind: "t", module: "decoy"))
        let live = SymbolIndex(liveRecords), reference = SymbolIndex(referenceRecords)

        #expect(try KASLR.slide(live: live, reference: reference) == Int64(slide))
        #expect(try KASLR.anchorSlides(live: live, reference: reference).map(\.name) == ["_text", "_stext"])
        // The anchors alone decide; with only one of them, startup_64 cross-checks.
        #expect(try KASLR.anchorSlides(live: live, reference: reference, anchors: ["_text"]).map(\.name) == ["_text", "startup_64"])

        // A slide that is not page-aligned means different builds.
        let odd = SymbolIndex(liveRecords.map { r in var r = r; r.address &+= 0x10; return r })
        #expect(throws: SymbolError.self) { try KASLR.slide(live: odd, reference: live) }
        do {
            _ = try KASLR.slide(live: odd, reference: live)
        } catch {
            #expect("\(error)".hasPrefix("KASLR: expected a page-aligned slide, found _text: live"))
        }

        // No anchor in the reference.
        let anonymous = SymbolIndex(referenceRecords.filter { !["_text", "_stext", "startup_64"].contains($0.name) || $0.module != nil })
        #expect(throws: SymbolError.noAnchor(anchors: ["_text", "_stext"], missingInLive: [],
                                             missingInReference: ["_text", "_stext", "startup_64"])) {
            try KASLR.slide(live: live, reference: anonymous)
        }
    }
}
