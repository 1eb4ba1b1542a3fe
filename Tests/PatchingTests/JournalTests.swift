import Foundation
import Testing
import TestSupport
@testable import Patching

@Suite struct JournalTests {
    func record(_ seq: Int, _ event: JournalRecord.Event, id: String = "p1", target: String = "pid:1") -> JournalRecord {
        JournalRecord(sequence: seq, time: 1, event: event, patchID: id, target: target, identity: nil,
                      hunks: [AppliedHunk(location: "f+0x2", address: 0x401002, original: [0x74], replacement: [0x75])])
    }

    @Test func recordsFoldIntoPatchStates() throws {
        let journal = Journal(directory: try Fixtures.temporaryFolder("journal").path + "/state")
        try journal.append(record(1, .applyIntent))
        #expect(try journal.patches(target: "pid:1").first?.state == .applying)
        try journal.append(record(2, .applyDone))
        try journal.append(record(3, .applyIntent, id: "p2"))
        try journal.append(record(4, .applyDone, id: "p2", target: "pid:2"))
        let patches = try journal.patches(target: "pid:1")
        #expect(patches.map(\.id) == ["p1", "p2"])
        #expect(patches.map(\.state) == [.applied, .applying])
        #expect(patches[0].hunks[0].address == 0x401002)
        try journal.append(record(5, .revertIntent))
        try journal.append(record(6, .revertDone))
        #expect(try journal.patches(target: "pid:1").first?.state == .reverted)
        #expect(try journal.nextSequence() == 7)
        // The state directory is private: it records what code was changed and how.
        let mode = try FileManager.default.attributesOfItem(atPath: journal.logPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test func tornLastLineIsIgnoredButCorruptionElsewhereIsNamed() throws {
        let journal = Journal(directory: try Fixtures.temporaryFolder("journal").path)
        try journal.append(record(1, .applyIntent))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: journal.logPath))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("{\"sequence\":2,\"ti".utf8))  // power loss mid-append
        try handle.close()
        #expect(try journal.records().count == 1)

        try Data("garbage\n".utf8 + (try Data(contentsOf: URL(fileURLWithPath: journal.logPath))))
            .write(to: URL(fileURLWithPath: journal.logPath))
        #expect { try journal.records() } throws: { "\($0)".contains("journal.jsonl:1: journal record unreadable") }
    }

    @Test func lockSerialisesTwoProcesses() throws {
        // A second process (flock(1) from util-linux) must wait while we hold the lock.
        let dir = try Fixtures.temporaryFolder("journal").path
        let journal = Journal(directory: dir)
        let start = Date()
        try journal.withLock {
            let probe = try Fixtures.run("flock", ["--nonblock", dir + "/lock", "true"])
            #expect(probe.status != 0, "another process took the journal lock while we held it")
        }
        let after = try Fixtures.run("flock", ["--nonblock", dir + "/lock", "true"])
        #expect(after.status == 0)
        #expect(Date().timeIntervalSince(start) < 10)
    }
}
