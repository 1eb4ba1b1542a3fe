import Foundation
import Synchronization
import Testing
import TestSupport
@testable import Lab

/// The cached ingredients, checked with host tools: cpio lists the initramfs, readelf reads
/// module dependencies, gunzip unpacks what the kernel will unpack.
struct IngredientsTests {
    @Test("fetch builds an initramfs that cpio lists with init, busybox, modules, NFS programs and flocktest")
    func initramfsContents() throws {
        let ingredients = Ingredients(paths: LabPaths(cache: Fixtures.cacheFolder.path))
        let image = try ingredients.fetch()
        #expect(image.kernel.hasSuffix("/boot/vmlinuz-6.1.0-56-amd64"))
        let listing = try Fixtures.check("sh", ["-c", "gzip -dc '\(image.initramfs)' | cpio -t --quiet"])
        let names = Set(listing.split(separator: "\n").map(String.init))
        for name in ["init", "bin/busybox", "dev/console", "sbin/flocktest", "sbin/rpcbind", "sbin/rpc.nfsd",
                     "sbin/rpc.mountd", "sbin/exportfs", "sbin/mount.nfs", "etc/netconfig", "etc/exports",
                     "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libtirpc.so.3", "lib/x86_64-linux-gnu/libwrap.so.0",
                     "lib/suture/modules/nfs.ko", "lib/suture/modules/nfsd.ko", "lib/suture/modules/virtio_console.ko",
                     "suture/nfs-setup", "suture/bulk-port"] {
            #expect(names.contains(name), "initramfs lacks \(name)")
        }
        // The module in the initramfs is the package's own file.
        let packaged = try Data(contentsOf: URL(fileURLWithPath: ingredients.modulesFolder + "/fs/nfs/nfs.ko"))
        let unpacked = try Fixtures.run("sh", ["-c", "gzip -dc '\(image.initramfs)' | cpio -i --quiet --to-stdout lib/suture/modules/nfs.ko"])
        #expect(unpacked.stdoutData == packaged)
    }

    @Test("a second fetch reuses everything: no download, no rebuild")
    func fetchIsIdempotent() throws {
        let ingredients = Ingredients(paths: LabPaths(cache: Fixtures.cacheFolder.path))
        let image = try ingredients.fetch()
        let before = Files.fingerprint(image.initramfs)
        let lines = Mutex<[String]>([])
        try ingredients.fetch(progress: { line in lines.withLock { $0.append(line) } })
        #expect(Files.fingerprint(image.initramfs) == before)
        let progress = lines.withLock { $0 }
        #expect(progress.contains { $0.contains("up to date") })
        #expect(!progress.contains { $0.contains("downloading") || $0.contains("building") })
    }

    @Test("module load order puts every dependency readelf finds in .modinfo first")
    func moduleOrderFollowsDepends() throws {
        let ingredients = Ingredients(paths: LabPaths(cache: Fixtures.cacheFolder.path))
        for list in [Ingredients.nfsModules, Ingredients.bulkModules] {
            let order = try ingredients.moduleLoadOrder(list)
            #expect(order.count == list.count)
            for module in list {
                let name = (module as NSString).lastPathComponent
                let strings = try Fixtures.check("readelf", ["-p", ".modinfo", ingredients.modulesFolder + "/\(module).ko"])
                let line = try #require(strings.split(separator: "\n").first { $0.contains("depends=") })
                let depends = line.components(separatedBy: "depends=")[1].split(separator: ",").map(String.init)
                #expect(Ingredients.modinfoDepends(try Files.read(ingredients.modulesFolder + "/\(module).ko")) == depends)
                let position = try #require(order.firstIndex(of: name))
                for dependency in depends {
                    let before = try #require(order.firstIndex(of: dependency), "\(name) needs \(dependency)")
                    #expect(before < position, "\(dependency) must load before \(name)")
                }
            }
        }
    }

    @Test("a version the archive does not carry: the error quotes apt-get and apt-cache policy")
    func unavailableVersion() throws {
        let cache = try Fixtures.temporaryFolder("suture-cache")
        defer { try? FileManager.default.removeItem(at: cache) }
        let paths = LabPaths(cache: cache.path)
        try FileManager.default.createDirectory(atPath: paths.debs, withIntermediateDirectories: true)
        let policy = try Fixtures.check("apt-cache", ["policy", Ingredients.kernelPackage])
        do {
            try Ingredients(paths: paths).download(["\(Ingredients.kernelPackage)=0.0-suture-bogus"], { _ in })
            Issue.record("apt-get downloaded a version that does not exist")
        } catch {
            guard case .packageUnavailable(let package, let version, let output, let quoted) = error else { throw error }
            #expect(package == Ingredients.kernelPackage)
            #expect(version == "0.0-suture-bogus")
            #expect(output.contains("0.0-suture-bogus"))
            #expect(quoted.trimmingCharacters(in: .whitespacesAndNewlines) == policy.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect("\(error)".contains("apt-cache policy \(Ingredients.kernelPackage)"))
        }
    }

    @Test("an extracted kernel tree of another size is refused with what was expected and found")
    func kernelTreeVerification() throws {
        let cache = try Fixtures.temporaryFolder("suture-cache")
        defer { try? FileManager.default.removeItem(at: cache) }
        let paths = LabPaths(cache: cache.path)
        try FileManager.default.createDirectory(atPath: paths.kernelRoot + "/boot", withIntermediateDirectories: true)
        try Data("not a kernel".utf8).write(to: URL(fileURLWithPath: paths.kernelRoot + "/boot/vmlinuz-6.1.0-56-amd64"))
        do {
            try Ingredients(paths: paths).fetch()
            Issue.record("accepted a fake kernel tree")
        } catch {
            guard case .kernelTreeInvalid(_, let expected, let found) = error else { throw error }
            #expect(expected.contains("8247232 bytes"))
            #expect(found == "12 bytes")
        }
    }
}
