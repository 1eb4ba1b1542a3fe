import Patching

/// The `.ko` files of the pinned kernel package in the cache: where the lab finds the reference
/// object of a module function (`nfs_flock [nfs]` → `kernel/fs/nfs/nfs.ko`). The package's
/// `modules.order` is read by Patching's `ShippedModules`, which `suture build` uses too.
extension ShippedModules {
    public init(paths: LabPaths = LabPaths(), release: String = Ingredients.kernelRelease) {
        self.init(modulesRoot: paths.kernelRoot + "/lib/modules/" + release)
    }
}
