import Foundation
import Testing
import TestSupport

/// The `suture` binary against real processes: exit codes, output, the journal, and recovery
/// after `kill -9` between the two writes of a two-hunk bundle.
@Suite(.serialized) struct ProcessPatchingTests {
    let exe: URL
    init() throws { exe = try Fixtures.compileFixture("victim.c", flags: ["-O0", "-pthread", "-g0"]) }

    func jccOffset(_ function: String) throws -> String {
        "\(function)+0x" + String(try TargetFixtures.conditionalJump(in: function, of: exe).offset, radix: 16)
    }

    @Test func flipStatusRevertThroughTheCLI() throws {
        let program = try LiveProgram(exe, arguments: ["2"])
        defer { program.stop() }
        let state = try Fixtures.temporaryFolder("e2e-state").path
        let t = ["-t", "pid:\(program.pid)", "--state-dir", state]
        let expr = try jccOffset("check")

        let dry = try Fixtures.suture(["flip"] + t + [expr, "--dry-run"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("✓ identity"))
        #expect(dry.stdout.contains("✓ busy"))
        #expect(dry.stdout.contains("nothing written"))
        try program.waitForLine(after: program.linesSeen) { $0 == "result 1 1" }

        let flip = try Fixtures.suture(["flip"] + t + [expr])
        #expect(flip.status == 0, "\(flip.stderr)")
        #expect(flip.stdout.contains("applied check-"))
        #expect(flip.stdout.contains("target stopped for"))
        try program.waitForLine(after: program.linesSeen) { $0 == "result 0 1" }

        let status = try Fixtures.suture(["status"] + t)
        #expect(status.stdout.contains(" applied "), "\(status.stdout)")

        let again = try Fixtures.suture(["flip"] + t + [expr])
        #expect(again.status == 1)
        #expect(again.stderr.contains("overlaps check+0x"), "\(again.stderr)")
        #expect(again.stderr.contains("of applied patch check-"), "\(again.stderr)")

        let revert = try Fixtures.suture(["revert"] + t + ["--all"])
        #expect(revert.status == 0, "\(revert.stderr)")
        try program.waitForLine(after: program.linesSeen) { $0 == "result 1 1" }
        #expect(try Fixtures.suture(["status"] + t).stdout.contains(" reverted "))
    }

    @Test func pokeWithWrongExpectationIsRefusedWithExitCode3() throws {
        let program = try LiveProgram(exe)
        defer { program.stop() }
        let state = try Fixtures.temporaryFolder("e2e-state").path
        let poke = try Fixtures.suture(["poke", "-t", "pid:\(program.pid)", "--state-dir", state, try jccOffset("check"),
                                        "--expect", "90", "--write", "91"])
        #expect(poke.status == 3)
        #expect(poke.stderr.contains("✗ bytes"), "\(poke.stderr)")
        #expect(poke.stderr.contains("expected 90"), "\(poke.stderr)")
        try program.waitForLine(after: program.linesSeen) { $0 == "result 1 1" }
    }

    @Test func readShowsLiveBytes() throws {
        let program = try LiveProgram(exe)
        defer { program.stop() }
        let offset = try TargetFixtures.conditionalJump(in: "check", of: exe)
        let read = try Fixtures.suture(["read", "-t", "pid:\(program.pid)", try jccOffset("check"), "1", "--json"])
        #expect(read.status == 0, "\(read.stderr)")
        #expect(read.stdout.contains("\"bytes\" : \"" + String(format: "%02x", offset.opcode) + "\""), "\(read.stdout)")
    }

    @Test func liveDisassemblyMatchesObjdumpsJump() throws {
        let program = try LiveProgram(exe)
        defer { program.stop() }
        let jcc = try TargetFixtures.conditionalJump(in: "check", of: exe)
        let listing = try Fixtures.suture(["disasm", "-t", "pid:\(program.pid)", "check"])
        #expect(listing.status == 0, "\(listing.stderr)")
        #expect(listing.stdout.contains(" <check>:    (live, pid:\(program.pid))"))
        // The jump objdump found at check+off is there, with its target symbolised.
        let line = try #require(listing.stdout.split(separator: "\n").first { $0.contains(String(format: "\t%02x ", jcc.opcode)) })
        #expect(line.contains("<check+0x"), "\(line)")
    }

    @Test func killNineBetweenHunksThenRecover() throws {
        let program = try LiveProgram(exe, arguments: ["2"])
        defer { program.stop() }
        let state = try Fixtures.temporaryFolder("e2e-state").path
        let t = ["-t", "pid:\(program.pid)", "--state-dir", state]
        // Two flips saved as bundles (dry runs write nothing), merged into one two-hunk bundle.
        let folder = try Fixtures.temporaryFolder("e2e-bundles")
        var hunks: [Any] = []
        var first: [String: Any] = [:]
        for function in ["check", "check2"] {
            let path = folder.appendingPathComponent("\(function).json").path
            let r = try Fixtures.suture(["flip"] + t + [try jccOffset(function), "--dry-run", "--save", path])
            #expect(r.status == 0, "\(r.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
            if first.isEmpty { first = object }
            hunks += object["hunks"] as? [Any] ?? []
        }
        first["hunks"] = hunks
        first["id"] = "two-hunks"
        let bundle = folder.appendingPathComponent("two.json").path
        try JSONSerialization.data(withJSONObject: first).write(to: URL(fileURLWithPath: bundle))

        // Apply with a 2 s pause after each hunk's write, and kill -9 Suture during the first pause.
        let apply = try Spawned(try Fixtures.sutureBinary().path, ["apply"] + t + [bundle],
                                environment: ["SUTURE_TEST_HUNK_DELAY_US": "2000000"])
        let journal = URL(fileURLWithPath: state + "/journal.jsonl")
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !((try? String(contentsOf: journal, encoding: .utf8)) ?? "").contains("applyIntent") { usleep(10_000) }
        usleep(700_000)
        apply.kill(SIGKILL)
        // The kernel detaches a dead tracer's tracees: the victim runs on, half patched.
        try program.waitForLine(after: program.linesSeen, timeout: 10) { $0 == "result 0 1" }

        let status = try Fixtures.suture(["flip"] + t + [try jccOffset("check2")])
        #expect(status.status == 1)
        #expect(status.stderr.contains("was interrupted (two-hunks)"), "\(status.stderr)")

        let recover = try Fixtures.suture(["recover"] + t)
        #expect(recover.status == 0, "\(recover.stderr)")
        #expect(recover.stdout.contains("two-hunks: reverted (1 hunk rewritten)"), "\(recover.stdout)")
        try program.waitForLine(after: program.linesSeen) { $0 == "result 1 1" }
        #expect(try Fixtures.suture(["status"] + t).stdout.contains("two-hunks  reverted"))
    }
}
