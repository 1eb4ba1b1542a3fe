import Foundation
import Patching

/// Reports one step of fetching or building, as a line a person can read ("downloading ...").
/// The library never prints; the CLI passes a handler that does.
public typealias LabProgress = @Sendable (String) -> Void

/// What QEMU boots: the pinned Debian kernel and the lab's initramfs.
public struct LabImage: Sendable, Hashable {
    public var kernel: String
    public var initramfs: String
    public var release: String

    public init(kernel: String, initramfs: String, release: String = Ingredients.kernelRelease) {
        self.kernel = kernel
        self.initramfs = initramfs
        self.release = release
    }
}

/// Everything the lab needs, fetched once into the cache and rebuilt only when an input changes.
///
/// - the kernel package `linux-image-6.1.0-56-amd64=6.1.192-2` (apt-get download, dpkg-deb -x);
///   an extracted tree already in the cache is verified and reused;
/// - the NFS userland (nfs-kernel-server, nfs-common, rpcbind, libtirpc3, libtirpc-common, libwrap0),
///   extracted into `lab/nfs-userland`;
/// - the initramfs: busybox-static, the NFS and virtio-console modules, the NFS programs with the
///   shared libraries ldd finds for them, a static `flocktest` built with gcc, and the guest scripts.
public struct Ingredients: Sendable {
    public static let kernelRelease = "6.1.0-56-amd64"
    public static let kernelVersion = "6.1.192-2"
    public static let kernelPackage = "linux-image-\(kernelRelease)"
    /// Sizes of two files in the pinned package: a cheap check that an extracted tree is that package.
    static let vmlinuzSize: UInt64 = 8_247_232
    static let nfsKoSize: UInt64 = 1_130_841

    /// Packages whose files the guest's NFS server and client need. libtirpc-common carries
    /// /etc/netconfig; libwrap0 is needed by rpcbind and rpc.mountd (ldd says so).
    static let nfsPackages = ["nfs-kernel-server", "nfs-common", "rpcbind", "libtirpc3", "libtirpc-common", "libwrap0"]

    /// Programs from those packages, as (path in the extracted packages, name in the guest's /sbin).
    static let nfsPrograms: [(String, String)] = [
        ("sbin/rpcbind", "rpcbind"), ("usr/sbin/rpc.nfsd", "rpc.nfsd"), ("usr/sbin/exportfs", "exportfs"),
        ("usr/sbin/rpc.mountd", "rpc.mountd"), ("usr/bin/rpcinfo", "rpcinfo"), ("sbin/mount.nfs", "mount.nfs"),
    ]

    /// Kernel modules (paths under lib/modules/<release>/kernel, without .ko). The load order the
    /// guest uses is computed from each module's `depends=` so it cannot drift from the package.
    static let nfsModules = [
        "net/sunrpc/sunrpc", "fs/nfs_common/grace", "fs/lockd/lockd", "fs/nfs_common/nfs_acl",
        "net/sunrpc/auth_gss/auth_rpcgss", "fs/netfs/netfs", "fs/fscache/fscache", "fs/nfs/nfs",
        "fs/nfs/nfsv3", "fs/nfsd/nfsd",
    ]
    /// The bulk channel is a virtio console port: about 14 MB/s where a second 8250 UART moved
    /// 0.3 MB/s under TCG. 8250 is built in, virtio is not, so these load on first use.
    static let bulkModules = [
        "drivers/virtio/virtio_ring", "drivers/virtio/virtio", "drivers/virtio/virtio_pci_modern_dev",
        "drivers/virtio/virtio_pci_legacy_dev", "drivers/virtio/virtio_pci", "drivers/char/virtio_console",
    ]

    /// Bumped when the layout of the initramfs changes, so old builds are not reused.
    static let initramfsFormat = "suture-initramfs-1"

    public let paths: LabPaths

    public init(paths: LabPaths = LabPaths()) {
        self.paths = paths
    }

    public var kernelImage: String { paths.kernelRoot + "/boot/vmlinuz-\(Self.kernelRelease)" }
    var modulesFolder: String { paths.kernelRoot + "/lib/modules/\(Self.kernelRelease)/kernel" }
    var kernelMarker: String { paths.kernelRoot + "/.suture-verified" }
    var initramfsInputsFile: String { paths.lab + "/initramfs.inputs" }

    /// Downloads and builds what is missing or out of date; cheap (a few stat calls and one ldd per
    /// program) when everything is current.
    @discardableResult
    public func fetch(progress: LabProgress = { _ in }) throws(LabError) -> LabImage {
        try Files.createDirectory(paths.lab)
        try Files.createDirectory(paths.debs)
        let lock = try FileLock(paths.lab + "/fetch.lock", throwing: LabError.self)
        defer { withExtendedLifetime(lock) {} }

        try ensureKernel(progress)
        let debs = try ensurePackages(Self.nfsPackages, progress)
        try ensureUserland(debs, progress)
        try ensureInitramfs(progress)
        return LabImage(kernel: kernelImage, initramfs: paths.initramfs)
    }

    // MARK: Kernel package

    private func ensureKernel(_ progress: LabProgress) throws(LabError) {
        let root = paths.kernelRoot
        if Files.isDirectory(root) {
            try verifyKernelTree(root)
            if !Files.exists(kernelMarker) {
                try Files.writeAtomically(kernelMarker, text: "\(Self.kernelPackage) \(Self.kernelVersion)\n")
            }
            progress("kernel: \(Self.kernelPackage) \(Self.kernelVersion) in \(root) (verified)")
            return
        }
        let deb = try ensureKernelPackage(progress)
        progress("extracting \(deb) (dpkg-deb -x)")
        let started = Date()
        let temporary = root + ".partial-\(getpid())"
        Files.remove(temporary)
        try Files.createDirectory(temporary)
        do {
            try HostTool.check("dpkg-deb", ["-x", deb, temporary], package: "dpkg", throwing: LabError.self)
            try verifyKernelTree(temporary)
        } catch {
            Files.remove(temporary)
            throw error
        }
        try Files.createDirectory((root as NSString).deletingLastPathComponent)
        guard rename(temporary, root) == 0 else {
            let code = errno
            Files.remove(temporary)
            throw .io(path: root, operation: "rename extracted kernel into place", errno: code)
        }
        try Files.writeAtomically(kernelMarker, text: "\(Self.kernelPackage) \(Self.kernelVersion)\n")
        progress("kernel: extracted into \(root) in \(Self.elapsed(since: started))")
    }

    private func verifyKernelTree(_ root: String) throws(LabError) {
        let vmlinuz = root + "/boot/vmlinuz-\(Self.kernelRelease)"
        let nfsKo = root + "/lib/modules/\(Self.kernelRelease)/kernel/fs/nfs/nfs.ko"
        let checks: [(String, UInt64)] = [(vmlinuz, Self.vmlinuzSize), (nfsKo, Self.nfsKoSize)]
        for (file, expected) in checks {
            let found = Files.size(file)
            guard found == expected else {
                throw .kernelTreeInvalid(path: root, expected: "\(file) of \(expected) bytes (\(Self.kernelPackage) \(Self.kernelVersion))",
                                         found: found.map { "\($0) bytes" } ?? "no such file")
            }
        }
    }

    private func ensureKernelPackage(_ progress: LabProgress) throws(LabError) -> String {
        let name = "\(Self.kernelPackage)_\(Self.kernelVersion)_amd64.deb"
        let deb = paths.debs + "/" + name
        if Files.exists(deb) { return deb }
        try download(["\(Self.kernelPackage)=\(Self.kernelVersion)"], progress)
        guard Files.exists(deb) else {
            throw .ingredientMissing(path: deb, purpose: "the kernel (apt-get download named it differently)")
        }
        return deb
    }

    // MARK: NFS userland

    /// Downloads the packages without a .deb in `debs/` yet; returns every package's .deb path.
    private func ensurePackages(_ packages: [String], _ progress: LabProgress) throws(LabError) -> [String] {
        var missing: [String] = []
        for package in packages where debFile(for: package) == nil { missing.append(package) }
        if !missing.isEmpty { try download(missing, progress) }
        var debs: [String] = []
        for package in packages {
            guard let deb = debFile(for: package) else {
                throw .ingredientMissing(path: paths.debs + "/\(package)_*.deb", purpose: "the guest's NFS userland")
            }
            debs.append(deb)
        }
        return debs
    }

    private func debFile(for package: String) -> String? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: paths.debs)) ?? []
        return names.filter { $0.hasPrefix(package + "_") && $0.hasSuffix(".deb") }.sorted().last
            .map { paths.debs + "/" + $0 }
    }

    func download(_ specs: [String], _ progress: LabProgress) throws(LabError) {
        progress("downloading \(specs.joined(separator: " ")) (apt-get download)")
        let started = Date()
        let result = try HostTool.run("apt-get", ["download"] + specs, in: paths.debs, package: "apt", throwing: LabError.self)
        guard result.status == 0 else {
            // Name the first package apt could not find, with what the archive offers for it.
            let failing = specs.first { spec in
                let package = String(spec.split(separator: "=").first ?? Substring(spec))
                return debFile(for: package) == nil
            } ?? specs[0]
            let parts = failing.split(separator: "=", maxSplits: 1).map(String.init)
            let policy = (try? HostTool.run("apt-cache", ["policy", parts[0]], package: "apt",
                                            throwing: LabError.self))?.output ?? ""
            throw .packageUnavailable(package: parts[0], version: parts.count > 1 ? parts[1] : nil,
                                      output: result.output.trimmingCharacters(in: .whitespacesAndNewlines),
                                      policy: policy.isEmpty ? "(no output)" : policy)
        }
        progress("downloaded \(specs.count) package(s) in \(Self.elapsed(since: started))")
    }

    private func ensureUserland(_ debs: [String], _ progress: LabProgress) throws(LabError) {
        let manifest = debs.map { "\(($0 as NSString).lastPathComponent) \(Files.size($0) ?? 0)" }.joined(separator: "\n") + "\n"
        let marker = paths.nfsUserland + "/.suture-packages"
        if (try? Files.readText(marker)) == manifest { return }
        progress("extracting \(debs.count) NFS packages into \(paths.nfsUserland)")
        let temporary = paths.nfsUserland + ".partial-\(getpid())"
        Files.remove(temporary)
        try Files.createDirectory(temporary)
        do {
            for deb in debs { try HostTool.check("dpkg-deb", ["-x", deb, temporary], package: "dpkg", throwing: LabError.self) }
            try Files.writeAtomically(temporary + "/.suture-packages", text: manifest)
        } catch {
            Files.remove(temporary)
            throw error
        }
        Files.remove(paths.nfsUserland)
        guard rename(temporary, paths.nfsUserland) == 0 else {
            let code = errno
            Files.remove(temporary)
            throw .io(path: paths.nfsUserland, operation: "rename extracted packages into place", errno: code)
        }
    }

    // MARK: Initramfs

    /// One file of the initramfs: where it comes from on the host and where it goes in the guest.
    struct Entry {
        var guestPath: String
        var hostPath: String
        var mode: UInt32
    }

    /// Collects every host file that goes into the initramfs, in a stable order.
    func initramfsEntries() throws(LabError) -> [Entry] {
        guard let busybox = HostTool.find("busybox") else {
            throw .toolMissing(tool: "busybox", package: "busybox-static")
        }
        var entries = [Entry(guestPath: "bin/busybox", hostPath: busybox, mode: 0o755)]

        for module in Self.nfsModules + Self.bulkModules {
            let name = (module as NSString).lastPathComponent
            entries.append(Entry(guestPath: "lib/suture/modules/\(name).ko",
                                 hostPath: modulesFolder + "/\(module).ko", mode: 0o644))
        }

        let stage = paths.nfsUserland
        var programs = [busybox]
        for (source, name) in Self.nfsPrograms {
            let path = stage + "/" + source
            guard Files.exists(path) else { throw .ingredientMissing(path: path, purpose: "the guest's NFS server") }
            entries.append(Entry(guestPath: "sbin/\(name)", hostPath: path, mode: 0o755))
            programs.append(path)
        }
        var libraries: [String: String] = [:]   // guest path -> host path
        for program in programs {
            for (guestPath, hostPath) in try sharedLibraries(of: program) { libraries[guestPath] = hostPath }
        }
        for guestPath in libraries.keys.sorted() {
            entries.append(Entry(guestPath: guestPath, hostPath: libraries[guestPath]!, mode: 0o755))
        }

        let netconfig = stage + "/etc/netconfig"
        guard Files.exists(netconfig) else { throw .ingredientMissing(path: netconfig, purpose: "libtirpc (package libtirpc-common)") }
        entries.append(Entry(guestPath: "etc/netconfig", hostPath: netconfig, mode: 0o644))
        // Name databases from the host's netbase, when present: rpcbind and rpcinfo only use them for names.
        for name in ["rpc", "services", "protocols"] where Files.exists("/etc/" + name) {
            entries.append(Entry(guestPath: "etc/" + name, hostPath: "/etc/" + name, mode: 0o644))
        }
        return entries
    }

    /// ldd's answer for a guest program, as (guest path, host path) pairs. Libraries shipped in the
    /// extracted packages win over the host's (LD_LIBRARY_PATH), the rest come from the host.
    private func sharedLibraries(of program: String) throws(LabError) -> [(String, String)] {
        let stage = paths.nfsUserland
        let environment = ["LD_LIBRARY_PATH": "\(stage)/lib/x86_64-linux-gnu:\(stage)/usr/lib/x86_64-linux-gnu"]
        let result = try HostTool.run("ldd", [program], environment: environment, package: "libc-bin", throwing: LabError.self)
        if result.status != 0 {
            if result.output.contains("not a dynamic executable") { return [] }
            throw .commandFailed(command: "ldd \(program)", status: result.status, output: result.output)
        }
        var pairs: [(String, String)] = []
        for line in result.stdout.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let first = fields.first, !first.hasPrefix("linux-vdso") else { continue }
            if fields.count >= 3, fields[1] == "=>" {
                guard fields[2] != "not", fields[2].hasPrefix("/") else {
                    throw .libraryMissing(binary: program, library: first)
                }
                pairs.append(("lib/x86_64-linux-gnu/" + first, fields[2]))
            } else if first.hasPrefix("/") {
                // The dynamic loader, at the path compiled into every program.
                pairs.append(((first as NSString).lastPathComponent == "ld-linux-x86-64.so.2"
                              ? "lib64/ld-linux-x86-64.so.2" : String(first.dropFirst()), first))
            }
        }
        return pairs
    }

    /// Orders modules so each comes after what its `.modinfo` `depends=` names. A dependency that is
    /// neither in the list nor built into the kernel is an error, not a guest-side insmod failure.
    func moduleLoadOrder(_ modules: [String]) throws(LabError) -> [String] {
        var dependencies: [String: [String]] = [:]
        let names = modules.map { ($0 as NSString).lastPathComponent }
        let builtin = Set(((try? Files.readText(paths.kernelRoot + "/lib/modules/\(Self.kernelRelease)/modules.builtin")) ?? "")
            .split(separator: "\n").map { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension })
        for (module, name) in zip(modules, names) {
            let path = modulesFolder + "/\(module).ko"
            guard Files.exists(path) else { throw .ingredientMissing(path: path, purpose: "the guest (kernel module)") }
            let depends = Self.modinfoDepends(try Files.read(path))
            for dependency in depends where !names.contains(dependency) && !builtin.contains(dependency) {
                throw .moduleDependencyMissing(module: name, dependency: dependency)
            }
            dependencies[name] = depends.filter { names.contains($0) }
        }
        var order: [String] = []
        var visiting: Set<String> = []
        func visit(_ name: String) {
            guard !order.contains(name), !visiting.contains(name) else { return }
            visiting.insert(name)
            for dependency in dependencies[name] ?? [] { visit(dependency) }
            order.append(name)
        }
        for name in names { visit(name) }
        return order
    }

    /// The value of `depends=` in a module's .modinfo strings (NUL-separated `key=value`).
    static func modinfoDepends(_ bytes: [UInt8]) -> [String] {
        let key = Array("\0depends=".utf8)
        return bytes.withUnsafeBufferPointer { haystack -> [String] in
            guard haystack.count > key.count else { return [] }
            var i = 0
            while i <= haystack.count - key.count {
                // memchr jumps to the next candidate; .modinfo strings start after a NUL.
                guard let hit = memchr(haystack.baseAddress! + i, Int32(key[1]), haystack.count - i) else { return [] }
                let at = haystack.baseAddress!.distance(to: hit.assumingMemoryBound(to: UInt8.self)) - 1
                i = at + 2
                guard at >= 0, at + key.count <= haystack.count,
                      haystack[at..<(at + key.count)].elementsEqual(key) else { continue }
                var end = at + key.count
                while end < haystack.count, haystack[end] != 0 { end += 1 }
                let value = String(decoding: haystack[(at + key.count)..<end], as: UTF8.self)
                return value.split(separator: ",").map { $0.replacingOccurrences(of: "-", with: "_") }
            }
            return []
        }
    }

    private func ensureInitramfs(_ progress: LabProgress) throws(LabError) {
        let entries = try initramfsEntries()
        var manifest = Self.initramfsFormat + "\n"
        for entry in entries {
            guard let fingerprint = Files.fingerprint(entry.hostPath) else {
                throw .ingredientMissing(path: entry.hostPath, purpose: "the initramfs (\(entry.guestPath))")
            }
            manifest += "\(entry.guestPath) \(entry.hostPath) \(fingerprint)\n"
        }
        for text in [GuestFiles.initScript, GuestFiles.nfsSetupScript, GuestFiles.bulkPortScript,
                     GuestFiles.flocktestSource, GuestFiles.passwd, GuestFiles.group, GuestFiles.exports] {
            manifest += "text \(Self.fnv1a(Array(text.utf8)))\n"
        }
        let inputs = "\(Self.fnv1a(Array(manifest.utf8)))\n"
        if Files.exists(paths.initramfs), (try? Files.readText(initramfsInputsFile)) == inputs {
            progress("initramfs: \(paths.initramfs) is up to date")
            return
        }

        let nfsOrder = try moduleLoadOrder(Self.nfsModules)
        let bulkOrder = try moduleLoadOrder(Self.bulkModules)
        progress("building initramfs: busybox, \(nfsOrder.count + bulkOrder.count) modules, "
                 + "\(Self.nfsPrograms.count) NFS programs, flocktest")
        let started = Date()
        try Files.createDirectory(paths.build)
        let flocktest = try buildFlocktest()

        var archive = CpioArchive()
        for folder in ["proc", "sys", "dev", "tmp", "run", "root", "mnt/nfs", "mnt/local", "export",
                       "var/lib/nfs", "suture"] {
            archive.addDirectory(folder)
        }
        // The kernel opens /dev/console for init before /init can mount devtmpfs.
        archive.addCharacterDevice("dev/console", major: 5, minor: 1)
        archive.addFile("init", text: GuestFiles.initScript, mode: 0o755)
        archive.addFile("suture/nfs-setup", text: GuestFiles.nfsSetupScript, mode: 0o755)
        archive.addFile("suture/bulk-port", text: GuestFiles.bulkPortScript, mode: 0o755)
        archive.addFile("lib/suture/nfs-modules", text: nfsOrder.joined(separator: "\n") + "\n")
        archive.addFile("lib/suture/bulk-modules", text: bulkOrder.joined(separator: "\n") + "\n")
        archive.addFile("etc/passwd", text: GuestFiles.passwd)
        archive.addFile("etc/group", text: GuestFiles.group)
        archive.addFile("etc/exports", text: GuestFiles.exports)
        archive.addFile("sbin/flocktest", contents: try Files.read(flocktest), mode: 0o755)
        for entry in entries {
            archive.addFile(entry.guestPath, contents: try Files.read(entry.hostPath), mode: entry.mode)
        }
        archive.finish()

        let cpio = paths.build + "/initramfs.cpio"
        try Files.writeAtomically(cpio, archive.bytes)
        defer { Files.remove(cpio) }
        let temporary = paths.initramfs + ".partial-\(getpid())"
        do {
            // -n: no name or time in the gzip header, so equal inputs give equal files.
            try HostTool.check("gzip", ["-1", "-n", "-c"], input: cpio, output: .stdoutFile(temporary), package: "gzip",
                               throwing: LabError.self)
        } catch {
            Files.remove(temporary)
            throw error
        }
        guard rename(temporary, paths.initramfs) == 0 else {
            let code = errno
            Files.remove(temporary)
            throw .io(path: paths.initramfs, operation: "rename into place", errno: code)
        }
        try Files.writeAtomically(initramfsInputsFile, text: inputs)
        let size = Double(Files.size(paths.initramfs) ?? 0) / 1_048_576
        progress(String(format: "initramfs: %@ (%d files, %.1f MB) built in %@",
                        paths.initramfs, archive.fileCount, size, Self.elapsed(since: started)))
    }

    /// Compiles the guest's flocktest statically (busybox has no flock applet).
    private func buildFlocktest() throws(LabError) -> String {
        let source = paths.build + "/flocktest.c"
        let output = paths.build + "/flocktest"
        try Files.writeAtomically(source, text: GuestFiles.flocktestSource)
        let result = try HostTool.run("gcc", ["-static", "-O2", "-Wall", "-o", output, source], package: "gcc",
                                      throwing: LabError.self)
        guard result.status == 0 else {
            throw .commandFailed(command: "gcc -static -O2 -Wall -o \(output) \(source) (static linking needs libc6-dev)",
                                 status: result.status, output: result.output)
        }
        return output
    }

    // MARK: Helpers

    static func fnv1a(_ bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }

    static func elapsed(since start: Date) -> String {
        String(format: "%.1f s", Date().timeIntervalSince(start))
    }
}
