import Foundation
import Testing
import TestSupport

/// The `suture` binary on running processes as first-class targets: symbols with the load bias,
/// `module:symbol` for libraries, stripped executables and `--elf`, bundles from `suture diff` of
/// two builds, `suture ps`, and targets that are not ours to trace.
@Suite(.serialized) struct ProcessTargetCLITests {
    static func host(_ defines: [String] = [], folder: URL? = nil) throws -> URL {
        try Fixtures.compileFixture("process_host.c", flags: ["-O0", "-g0", "-pthread"] + defines + ["-ldl"],
                                    in: folder ?? Fixtures.temporaryFolder("e2e-host"))
    }

    static func library() throws -> URL {
        try Fixtures.compileFixture("process_lib.c", flags: ["-O0", "-g0", "-fPIC", "-shared"], in: Fixtures.temporaryFolder("e2e-lib"))
    }

    static func nmValue(_ symbol: String, _ file: URL) throws -> UInt64 {
        let nm = try Fixtures.check("nm", [file.path])
        guard let line = nm.split(separator: "\n").first(where: { $0.hasSuffix(" " + symbol) }),
              let value = UInt64(line.split(separator: " ")[0], radix: 16) else { throw Fixtures.Failure("nm: no \(symbol)") }
        return value
    }

    static func hex(_ value: UInt64) -> String { String(format: "%016lx", value) }

    func expectLine(_ program: LiveProgram, _ matches: @escaping (String) -> Bool) throws {
        try program.waitForLine(after: program.linesSeen, matches)
    }

    @Test func symbolsAndALibraryFlipThroughTheCLI() throws {
        let library = try Self.library()
        let exe = try Self.host()
        let program = try LiveProgram(exe, arguments: [library.path])
        defer { program.stop() }
        let t = ["-t", "pid:\(program.pid)"]
        let symbols = try Fixtures.suture(["symbols"] + t + ["main_loop", "gate", "\(library.lastPathComponent):parse_header+0x4"])
        #expect(symbols.status == 0, "\(symbols.stderr)")
        let lines = symbols.stdout.split(separator: "\n")
        let mainLoop = try TargetFixtures.runtimeAddress(of: "main_loop", in: exe, pid: program.pid).runtime
        #expect(lines.contains { $0.hasPrefix(Self.hex(mainLoop) + "  T") && $0.hasSuffix("main_loop") }, "\(symbols.stdout)")
        #expect(lines.contains { $0.hasPrefix(Self.hex(program.printed["gate"]!)) && $0.hasSuffix("gate") })
        #expect(lines.contains { $0.hasPrefix(Self.hex(program.printed["parse"]! + 4)) && $0.contains(library.lastPathComponent)
                                 && $0.hasSuffix("parse_header+0x4") }, "\(symbols.stdout)")

        // The library's jump, named the library's way; objdump says where it is.
        let jump = try TargetFixtures.conditionalJump(in: "parse_header", of: library)
        let state = try Fixtures.temporaryFolder("e2e-state").path
        let expr = "\(library.lastPathComponent):parse_header+0x" + String(jump.offset, radix: 16)
        try expectLine(program) { $0.contains(" lib 1 ") }
        let flip = try Fixtures.suture(["flip"] + t + ["--state-dir", state, expr])
        #expect(flip.status == 0, "\(flip.stderr)")
        #expect(flip.stdout.contains("parse_header [\(library.lastPathComponent)]+0x"), "\(flip.stdout)")
        try expectLine(program) { $0.contains(" lib 0 ") }
        let revert = try Fixtures.suture(["revert"] + t + ["--state-dir", state, "--all"])
        #expect(revert.status == 0, "\(revert.stderr)")
        try expectLine(program) { $0.contains(" lib 1 ") }
    }

    @Test func strippedExecutableSaysSoAndTakesElf() throws {
        let folder = try Fixtures.temporaryFolder("e2e-stripped")
        let full = try Self.host(folder: folder)
        let stripped = folder.appendingPathComponent("host-stripped")
        try Fixtures.check("strip", ["-o", stripped.path, full.path])
        let program = try LiveProgram(stripped)
        defer { program.stop() }
        let t = ["-t", "pid:\(program.pid)"]
        let bare = try Fixtures.suture(["symbols"] + t + ["gate"])
        #expect(bare.status == 1)
        #expect(bare.stderr.contains("note: \(stripped.path) is stripped"), "\(bare.stderr)")
        #expect(bare.stderr.contains("give --elf FILE with its symbols"))
        let given = try Fixtures.suture(["symbols"] + t + ["--elf", full.path, "gate"])
        #expect(given.status == 0, "\(given.stderr)")
        #expect(given.stdout.hasPrefix(Self.hex(program.printed["gate"]!)), "\(given.stdout)")
        // The same for a write: the flip fails with the note, then works with --elf.
        let state = try Fixtures.temporaryFolder("e2e-state").path
        let jump = try TargetFixtures.conditionalJump(in: "gate", of: full)
        let expr = "gate+0x" + String(jump.offset, radix: 16)
        let refused = try Fixtures.suture(["flip"] + t + ["--state-dir", state, expr])
        #expect(refused.status == 1 && refused.stderr.contains("is stripped"), "\(refused.stderr)")
        try expectLine(program) { $0.hasPrefix("gate 1 ") }
        let flip = try Fixtures.suture(["flip"] + t + ["--state-dir", state, "--elf", full.path, expr])
        #expect(flip.status == 0, "\(flip.stderr)")
        try expectLine(program) { $0.hasPrefix("gate 0 ") }
        #expect(try Fixtures.suture(["revert"] + t + ["--state-dir", state, "--all"]).status == 0)
        try expectLine(program) { $0.hasPrefix("gate 1 ") }
    }

    @Test func diffOfTwoBuildsAppliesToTheOldOneOnly() throws {
        let old = try Self.host(), new = try Self.host(["-DLESS", "-DGREETING=\"HELLO-world\""])
        let other = try Self.host(["-DLIMIT=6"])
        let folder = try Fixtures.temporaryFolder("e2e-diff")
        let bundle = folder.appendingPathComponent("b.json").path
        let diff = try Fixtures.suture(["diff", old.path, new.path, "-o", bundle])
        #expect(diff.status == 0, "\(diff.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: bundle))) as? [String: Any])
        let identity = try #require(json["target"] as? [String: Any])
        let readelf = try Fixtures.check("readelf", ["-n", old.path])
        #expect(readelf.contains("Build ID: \(identity["buildID"] as? String ?? "?")"), "the bundle names the OLD build")

        // Another build of the same program: refused by identity, exit status 3, nothing written.
        let wrong = try LiveProgram(other)
        defer { wrong.stop() }
        let refused = try Fixtures.suture(["apply", "-t", "pid:\(wrong.pid)", "--state-dir", folder.path, bundle])
        #expect(refused.status == 3, "\(refused.stderr)")
        #expect(refused.stderr.contains("✗ identity: build-id: bundle"), "\(refused.stderr)")
        try expectLine(wrong) { $0 == "gate 1 lib -1 greeting hello-world" }

        let program = try LiveProgram(old)
        defer { program.stop() }
        let t = ["-t", "pid:\(program.pid)", "--state-dir", folder.path]
        let apply = try Fixtures.suture(["apply"] + t + [bundle])
        #expect(apply.status == 0, "\(apply.stderr)")
        #expect(apply.stdout.contains("✓ boundaries") && apply.stdout.contains("data: no instruction boundaries"), "\(apply.stdout)")
        try expectLine(program) { $0 == "gate 0 lib -1 greeting HELLO-world" }
        let status = try Fixtures.suture(["status"] + t)
        #expect(status.stdout.contains(" applied "), "\(status.stdout)")
        let revert = try Fixtures.suture(["revert"] + t + ["--all"])
        #expect(revert.status == 0, "\(revert.stderr)")
        try expectLine(program) { $0 == "gate 1 lib -1 greeting hello-world" }
        #expect(try Fixtures.suture(["status"] + t).stdout.contains(" reverted "))
    }

    @Test func psListsPatchedProcessesCheckedLive() throws {
        let exe = try Self.host()
        let state = try Fixtures.temporaryFolder("e2e-ps").path
        let jump = try TargetFixtures.conditionalJump(in: "gate", of: exe)
        let expr = "gate+0x" + String(jump.offset, radix: 16)
        let kept = try LiveProgram(exe), gone = try LiveProgram(exe)
        defer { kept.stop(); gone.stop() }
        for p in [kept, gone] {
            let flip = try Fixtures.suture(["flip", "-t", "pid:\(p.pid)", "--state-dir", state, expr])
            #expect(flip.status == 0, "\(flip.stderr)")
        }
        gone.stop()
        let ps = try Fixtures.suture(["ps", "--state-dir", state])
        #expect(ps.status == 0, "\(ps.stderr)")
        let rows = ps.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.first == ["PID", "LIVE", "JOURNAL", "PATCH", "EXECUTABLE", "DESCRIPTION"])
        #expect(rows.contains { $0.count > 4 && $0[0] == "\(kept.pid)" && $0[1] == "applied" && $0[2] == "applied" && $0[4] == exe.path }, "\(ps.stdout)")
        #expect(rows.contains { $0.count > 4 && $0[0] == "\(gone.pid)" && $0[1] == "exited" && $0[2] == "applied" }, "\(ps.stdout)")

        // Drift shows too: someone else (another journal) rewrites the jump into a `jmp`.
        let address = try TargetFixtures.runtimeAddress(of: "gate", in: exe, pid: kept.pid).runtime + jump.offset
        let poke = try Fixtures.suture(["poke", "-t", "pid:\(kept.pid)", "--state-dir", try Fixtures.temporaryFolder("e2e-other").path,
                                        "0x" + String(address, radix: 16), "--expect", String(format: "%02x", jump.opcode ^ 1),
                                        "--write", "eb"])
        #expect(poke.status == 0, "\(poke.stderr)")
        let drifted = try Fixtures.suture(["ps", "--state-dir", state, "--json"])
        let entries = try #require(try JSONSerialization.jsonObject(with: drifted.stdoutData) as? [[String: String]])
        #expect(entries.first { $0["pid"] == "\(kept.pid)" }?["live"] == "drifted", "\(drifted.stdout)")
        #expect(entries.first { $0["pid"] == "\(gone.pid)" }?["live"] == "exited")

        let revert = try Fixtures.suture(["revert", "-t", "pid:\(kept.pid)", "--state-dir", state, "--all", "--force"])
        #expect(revert.status == 0, "\(revert.stderr)")
        let after = try Fixtures.suture(["ps", "--state-dir", state])
        #expect(!after.stdout.contains("\(kept.pid)  applied"), "\(after.stdout)")
        let all = try Fixtures.suture(["ps", "--state-dir", state, "--all"])
        #expect(all.stdout.contains("\(kept.pid)  reverted  reverted"), "\(all.stdout)")
    }

    @Test func processesThatAreNotOursToTrace() throws {
        let state = try Fixtures.temporaryFolder("e2e-state").path
        // A kernel thread: no user memory, ptrace refuses it even to root.
        let kthread = try Fixtures.suture(["flip", "-t", "pid:2", "--state-dir", state, "gate"])
        #expect(kthread.status == 1)
        #expect(kthread.stderr.contains("pid:2: not permitted to trace: it is a kernel thread"), "\(kthread.stderr)")
        // No such process.
        let none = try Fixtures.suture(["symbols", "-t", "pid:999999999", "gate"])
        #expect(none.status == 1)
        #expect(none.stderr.contains("pid 999999999: no such process"), "\(none.stderr)")

        let exe = try Self.host()
        let program = try LiveProgram(exe)
        defer { program.stop() }
        // Another user (nobody) may not trace root's process.
        let binary = try Fixtures.sutureBinary().path
        let nobody = try Fixtures.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", binary,
                                                  "flip", "-t", "pid:\(program.pid)", "--state-dir", state, "gate"])
        #expect(nobody.status == 1)
        #expect(nobody.stderr.contains("pid:\(program.pid): not permitted to trace"), "\(nobody.stderr)")
        // A process a debugger holds.
        let (server, _) = try TargetFixtures.startGDBServer(attachingTo: program.pid)
        defer { server.kill() }
        let traced = try Fixtures.suture(["flip", "-t", "pid:\(program.pid)", "--state-dir", state, "gate"])
        #expect(traced.status == 1)
        #expect(traced.stderr.contains("pid:\(program.pid): already traced by pid \(server.pid)"), "\(traced.stderr)")
    }
}
