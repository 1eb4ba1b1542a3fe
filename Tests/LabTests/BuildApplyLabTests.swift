import Foundation
import Testing
import TestSupport
@testable import Lab

/// The article's whole path on the real Debian kernel: `suture build` turns the one-line source
/// patch into a bundle, `suture apply -t lab` writes it into the running guest (nfs.ko loaded, an
/// NFS mount up), flock() on NFS then fails with ENOLCK while tmpfs still locks, and `suture revert`
/// puts it back. The guest's own flocktest is the oracle.
@Suite("suture build, then apply in the lab (Debian 6.1, NFS)", .serialized, .labVMExclusive)
struct BuildApplyLabTests {
    @Test("nfs_flock.patch built from source makes flock on NFS fail with ENOLCK; revert restores it")
    func articleLive() throws {
        let folder = try Fixtures.temporaryFolder("suture-build-lab")
        defer { try? FileManager.default.removeItem(at: folder) }
        let bundlePath = folder.appendingPathComponent("nfs_flock.bundle.json").path
        let patch = Fixtures.sourcesFolder.appendingPathComponent("nfs_flock.patch").path
        let build = try Fixtures.suture(["build", "--debian-kernel", Ingredients.kernelRelease, patch, "-o", bundlePath])
        try #require(build.status == 0, "suture build failed:\n\(build.stdout)\n\(build.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: bundlePath))) as? [String: Any]
        let id = try #require(json?["id"] as? String)
        let stateDirectory = folder.appendingPathComponent("state").path

        try LabHarness.withLab(LabOptions(nfs: true)) { vm, _ in
            // This VM's run folder (never a lab the developer has up) and a journal of our own.
            let environment = ["SUTURE_LAB_RUN": vm.paths.runFolder, "SUTURE_STATE_DIR": stateDirectory]

            let ok = CommandResult(output: "flock: OK\n", status: 0)
            let enolck = CommandResult(output: "flock: \(String(cString: strerror(ENOLCK))) (errno \(ENOLCK))\n", status: 1)
            #expect(try vm.exec("/sbin/flocktest /mnt/nfs/before") == ok)

            let apply = try Fixtures.suture(["apply", "-t", "lab", bundlePath], environment: environment)
            try #require(apply.status == 0, "suture apply failed:\n\(apply.stdout)\n\(apply.stderr)")
            // Bound to this kernel (release and build-id) and matched whole against the live nfs_flock.
            for check in ["identity", "bytes", "function", "boundaries"] {
                #expect(apply.stdout.contains("✓ \(check)"), "no passed \(check) check in:\n\(apply.stdout)")
            }
            #expect(try vm.exec("/sbin/flocktest /mnt/nfs/patched") == enolck)
            #expect(try vm.exec("/sbin/flocktest /mnt/local/patched") == ok)

            let revert = try Fixtures.suture(["revert", "-t", "lab", id], environment: environment)
            #expect(revert.status == 0, "suture revert failed:\n\(revert.stdout)\n\(revert.stderr)")
            #expect(try vm.exec("/sbin/flocktest /mnt/nfs/reverted") == ok)
        }
    }
}
