import Foundation
import Testing
import TestSupport
@testable import Lab

/// The guest's flocktest, built and run on the host: its one-line contract is what the
/// nfs_flock scenario reads back from the guest.
struct FlocktestTests {
    @Test("flock: OK on a free file; strerror and errno when another process holds the lock; 2 when it cannot open")
    func contract() throws {
        let folder = try Fixtures.temporaryFolder("suture-flocktest")
        defer { try? FileManager.default.removeItem(at: folder) }
        let program = try Fixtures.compileC(GuestFiles.flocktestSource, name: "flocktest",
                                            flags: ["-static", "-O2", "-Wall", "-Werror"], in: folder)
        let file = folder.appendingPathComponent("locked").path

        let free = try Fixtures.run(program.path, [file])
        #expect(free.status == 0)
        #expect(free.stdout == "flock: OK\n")

        // util-linux flock(1) holds an exclusive lock on the file while `sleep` runs.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        holder.arguments = ["-x", "--no-fork", file, "sleep", "30"]   // no fork: SIGKILL ends the holder
        try holder.run()
        defer { kill(holder.processIdentifier, SIGKILL); holder.waitUntilExit() }
        var busy = try Fixtures.run(program.path, [file])
        for _ in 0..<100 where busy.status == 0 {   // until flock(1) has taken the lock
            usleep(20_000)
            busy = try Fixtures.run(program.path, [file])
        }
        #expect(busy.status == 1)
        #expect(busy.stdout == "flock: \(String(cString: strerror(EWOULDBLOCK))) (errno \(EWOULDBLOCK))\n")

        let missing = try Fixtures.run(program.path, [folder.appendingPathComponent("no/such/dir/x").path])
        #expect(missing.status == 2)
        #expect(missing.stdout == "open: \(String(cString: strerror(ENOENT))) (errno \(ENOENT))\n")
    }
}
