import Foundation

/// Where the lab keeps what it fetches, builds and runs.
///
/// The cache (`SUTURE_CACHE`, default `~/.cache/suture`) is shared with the tests and the other
/// modules: `debs/` holds the downloaded packages, `kernel/<release>/` the extracted kernel package,
/// `lab/` the NFS userland and the initramfs. The run folder (`SUTURE_LAB_RUN`, default `lab/run`)
/// holds one VM's sockets, logs and state file: several sessions sharing a cache each set their
/// own, and tests pass their own, so nobody downs a VM somebody else started.
public struct LabPaths: Sendable, Hashable {
    public var cache: String
    public var runFolder: String

    public init(cache: String? = nil, runFolder: String? = nil) {
        let resolved = cache ?? Self.defaultCache()
        self.cache = resolved
        self.runFolder = runFolder ?? Self.environment("SUTURE_LAB_RUN") ?? resolved + "/lab/run"
    }

    /// `SUTURE_CACHE` when set and not empty, else `~/.cache/suture`.
    public static func defaultCache() -> String {
        environment("SUTURE_CACHE") ?? FileManager.default.homeDirectoryForCurrentUser.path + "/.cache/suture"
    }

    private static func environment(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }

    public var debs: String { cache + "/debs" }
    public var kernelRoot: String { cache + "/kernel/" + Ingredients.kernelRelease }
    public var lab: String { cache + "/lab" }
    public var nfsUserland: String { lab + "/nfs-userland" }
    public var build: String { lab + "/build" }
    public var initramfs: String { lab + "/initramfs.cpio.gz" }

    // One VM's files, all in the run folder.
    public var stateFile: String { runFolder + "/state.json" }
    public var serialSocket: String { runFolder + "/serial.sock" }
    public var serialLog: String { runFolder + "/serial.log" }
    public var qmpSocket: String { runFolder + "/qmp.sock" }
    public var bulkFile: String { runFolder + "/bulk.out" }
    public var qemuOutput: String { runFolder + "/qemu.out" }
    var runLock: String { runFolder + "/lab.lock" }
    var consoleLock: String { runFolder + "/console.lock" }
}
