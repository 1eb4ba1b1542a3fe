import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Applies a source patch to a kernel tree *in place* and puts the original files back afterwards.
///
/// Why in place and not on a copy: a prepared tree is 1.5 GB of sources plus the outputs of
/// `modules_prepare`; copying it would cost more than the whole build, while the patch touches a
/// few files. The revert is guaranteed in every exit path by keeping the originals outside the
/// tree's sources before the first byte changes:
///
/// 1. the touched files are copied into `<journal>.partial/files/`, a manifest listing them is
///    written and fsync'd, and the folder is renamed to `<journal>` (the rename is the commit
///    point: a journal without a manifest never exists);
/// 2. `patch -p1` runs; if it fails part-way, the originals are copied back at once;
/// 3. `restore()` copies the originals back and removes the journal. The restored files get a
///    fresh mtime, so make rebuilds any object last built from the patched text.
///
/// If the process dies between 1 and 3 (SIGKILL, power loss), the journal stays behind and
/// `recover` (called at the start of every build on the tree) restores the files first.
struct SourceTreeJournal {
    let tree: String
    let journal: String
    let files: [String]

    static let manifestName = "manifest"

    /// Checks with `patch --dry-run` that the patch applies exactly (no fuzz), without touching the tree.
    static func checkApplies(_ patch: SourcePatch, tree: String) throws(KernelBuildError) {
        let result = try HostTool.run("patch", patchArguments(patch, dryRun: true), in: tree, package: "patch",
                                      throwing: KernelBuildError.self)
        guard result.status == 0 else {
            throw .patchDoesNotApply(patch: patch.path, tree: tree, output: result.output)
        }
    }

    static func patchArguments(_ patch: SourcePatch, dryRun: Bool) -> [String] {
        // --forward: an already-applied patch is an error, not a silent reverse.
        // --fuzz=0: hunks land only where their whole context matches, never guessed.
        // No backup or reject files are left in the tree (the journal keeps the originals).
        var arguments = ["-p1", "--forward", "--batch", "--fuzz=0", "--no-backup-if-mismatch",
                         "--reject-file=-", "-i", patch.path]
        if dryRun { arguments.insert("--dry-run", at: 0) }
        return arguments
    }

    /// Saves the originals of the patch's files, then applies it. On failure the tree is restored
    /// and the error carries patch's output.
    static func apply(_ patch: SourcePatch, tree: String, journal: String) throws(KernelBuildError) -> SourceTreeJournal {
        let files = patch.files.map(\.path)
        try save(files, tree: tree, journal: journal)
        let applied = SourceTreeJournal(tree: tree, journal: journal, files: files)
        let result: HostTool.Result
        do {
            result = try HostTool.run("patch", patchArguments(patch, dryRun: false), in: tree, package: "patch",
                                      throwing: KernelBuildError.self)
        } catch {
            try applied.restore()
            throw error
        }
        guard result.status == 0 else {
            try applied.restore()
            throw .patchDoesNotApply(patch: patch.path, tree: tree, output: result.output)
        }
        return applied
    }

    /// Puts every original back and removes the journal.
    func restore() throws(KernelBuildError) {
        for file in files {
            let saved = journal + "/files/" + file
            let target = tree + "/" + file
            let temporary = target + ".suture-restore"
            do {
                unlink(temporary)
                try FileManager.default.copyItem(atPath: saved, toPath: temporary)
            } catch {
                throw .restoreFailed(tree: tree, journal: journal, reason: "copy \(saved): \(error.localizedDescription)")
            }
            guard rename(temporary, target) == 0 else {
                let code = errno
                throw .restoreFailed(tree: tree, journal: journal, reason: "rename onto \(target): \(String(cString: strerror(code)))")
            }
            // copyItem keeps the saved file's mtime; a fresh one makes make rebuild the object.
            utimes(target, nil)
        }
        do { try FileManager.default.removeItem(atPath: journal) } catch {
            throw .restoreFailed(tree: tree, journal: journal, reason: "remove the journal: \(error.localizedDescription)")
        }
    }

    /// Restores the files of a journal left by an interrupted build; returns them (empty when
    /// there was none). A `.partial` journal never reached its commit point: the tree was not
    /// touched, so it is only removed.
    static func recover(tree: String, journal: String) throws(KernelBuildError) -> [String] {
        try? FileManager.default.removeItem(atPath: journal + ".partial")
        guard FileManager.default.fileExists(atPath: journal) else { return [] }
        guard let manifest = FileManager.default.contents(atPath: journal + "/" + manifestName) else {
            throw .restoreFailed(tree: tree, journal: journal, reason: "the journal has no manifest")
        }
        let files = String(decoding: manifest, as: UTF8.self).split(separator: "\n").map(String.init)
        let pending = SourceTreeJournal(tree: tree, journal: journal, files: files)
        try pending.restore()
        return files
    }

    /// Copies `files` into `<journal>.partial`, writes the manifest and renames the folder into place.
    private static func save(_ files: [String], tree: String, journal: String) throws(KernelBuildError) {
        let partial = journal + ".partial"
        try? FileManager.default.removeItem(atPath: partial)
        for file in files {
            let saved = partial + "/files/" + file
            do {
                try FileManager.default.createDirectory(atPath: (saved as NSString).deletingLastPathComponent,
                                                        withIntermediateDirectories: true)
                try FileManager.default.copyItem(atPath: tree + "/" + file, toPath: saved)
            } catch {
                try? FileManager.default.removeItem(atPath: partial)
                throw .io(path: tree + "/" + file, operation: "save a copy in \(partial)", errno: errno == 0 ? EIO : errno)
            }
            try sync(saved)
        }
        let manifest = partial + "/" + manifestName
        guard FileManager.default.createFile(atPath: manifest, contents: Data((files.joined(separator: "\n") + "\n").utf8)) else {
            throw .io(path: manifest, operation: "write", errno: errno)
        }
        try sync(manifest)
        try? FileManager.default.removeItem(atPath: journal)
        guard rename(partial, journal) == 0 else {
            throw .io(path: journal, operation: "rename the journal into place", errno: errno)
        }
        try sync((journal as NSString).deletingLastPathComponent)
    }

    private static func sync(_ path: String) throws(KernelBuildError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, operation: "open for fsync", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .io(path: path, operation: "fsync", errno: errno) }
    }
}
