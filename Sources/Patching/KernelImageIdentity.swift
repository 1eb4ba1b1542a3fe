import ELF
import Foundation
import Targets

/// The identity a bundle built from source is bound to: the kernel release and the GNU build-id of
/// the image it will be applied to, read from the vmlinux notes (decompressed from the bzImage,
/// which takes a second or two, so the answer is cached next to the image and reused while the
/// image's size and mtime are unchanged).
public enum KernelImageIdentity {
    /// `image` is a bzImage (`/boot/vmlinuz-*`) or an ELF vmlinux. `cacheFile` keeps the answer.
    /// Reported as the `identity` phase (skipped when the cached answer is current).
    public static func read(image: String, release: String?, cacheFile: String?,
                            progress: KernelBuildProgress = { _ in }) throws(KernelBuildError) -> TargetIdentity {
        let fingerprint = fingerprint(of: image)
        guard let fingerprint else { throw .kernelImage(path: image, reason: "no such file") }
        if let cacheFile, let data = FileManager.default.contents(atPath: cacheFile) {
            let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
            if lines.count == 2, lines[0] == fingerprint, !lines[1].isEmpty {
                progress(.skipped(.identity, reason: "build-id \(lines[1]) (cached in \(cacheFile))"))
                return TargetIdentity(kind: .kernel, release: release, buildID: lines[1])
            }
        }
        progress(.started(.identity, detail: "build-id from the vmlinux notes of \(image)"))
        let started = KernelBuildClock.now
        let buildID = try readBuildID(image)
        if let cacheFile {
            try? (fingerprint + "\n" + buildID + "\n").write(toFile: cacheFile, atomically: true, encoding: .utf8)
        }
        progress(.finished(.identity, seconds: KernelBuildClock.seconds(since: started), detail: "build-id \(buildID)"))
        return TargetIdentity(kind: .kernel, release: release, buildID: buildID)
    }

    static func readBuildID(_ image: String) throws(KernelBuildError) -> String {
        do {
            let handle = FileHandle(forReadingAtPath: image)
            let magic = (try? handle?.read(upToCount: 4)).flatMap { $0 } ?? Data()
            try? handle?.close()
            let elf: ELFFile
            if [UInt8](magic) == [0x7f, 0x45, 0x4c, 0x46] {
                elf = try ELFFile(path: image)
            } else {
                elf = try ELFFile(bytes: try KernelImage.extractVmlinux(fromBzImage: image), name: image + " (vmlinux)")
            }
            guard let id = try elf.buildID(), !id.isEmpty else {
                throw KernelBuildError.kernelImage(path: image, reason: "the vmlinux has no GNU build-id note")
            }
            return Hex.bytes(id, separator: "")
        } catch let error as KernelBuildError {
            throw error
        } catch {
            throw .kernelImage(path: image, reason: "\(error)")
        }
    }

    private static func fingerprint(of path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return "\(st.st_size):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
    }
}
