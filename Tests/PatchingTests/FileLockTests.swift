import Foundation
import Testing
import TestSupport
@testable import Patching

/// The one lock file type, as the journal, kernel builds and the lab use it. flock(2) locks belong
/// to an open file, so two `FileLock`s in one process exclude each other as two processes would.
struct FileLockTests {
    @Test("a waiter with a timeout gives up naming what it waited for; the lock ends with its value")
    func timeoutAndRelease() throws {
        let folder = try Fixtures.temporaryFolder("suture-filelock")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.path + "/lock"
        var held: FileLock? = try FileLock(path, throwing: KernelBuildError.self)
        do {
            _ = try FileLock(path, timeout: 0.1, holder: "the other build", throwing: KernelBuildError.self)
            Issue.record("took a lock that was held")
        } catch {
            guard case .io(path, "wait 0 s for the other build (flock)", EWOULDBLOCK) = error else { throw error }
        }
        withExtendedLifetime(held) {}
        held = nil
        _ = try FileLock(path, timeout: 0.1, throwing: KernelBuildError.self)
    }

    @Test("the lock file is created with the permissions asked for")
    func permissions() throws {
        let folder = try Fixtures.temporaryFolder("suture-filelock")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.path + "/lock"
        let lock = try FileLock(path, permissions: 0o600, throwing: JournalError.self)
        defer { withExtendedLifetime(lock) {} }
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test("a lock file that cannot be created is an error naming it")
    func unopenable() throws {
        do {
            _ = try FileLock("/nonexistent-suture-folder/lock", throwing: JournalError.self)
            Issue.record("locked a file in a folder that does not exist")
        } catch {
            #expect(error == .io(path: "/nonexistent-suture-folder/lock", operation: "open lock file", errno: ENOENT))
        }
    }
}
