/// How to boot the lab VM.
public struct LabOptions: Sendable, Hashable {
    /// nil: the kernel's default (KASLR on, CONFIG_RANDOMIZE_BASE=y); false adds `nokaslr`.
    public var kaslr: Bool?
    public var smp: Int
    public var memoryMB: Int
    /// Serve a tmpfs over NFSv3 inside the guest and mount it on /mnt/nfs (about 4 to 5 s).
    public var nfs: Bool
    public var bootTimeout: Double
    public var nfsTimeout: Double
    /// What to boot; nil fetches (or reuses) the cached ingredients.
    public var image: LabImage?
    /// The QEMU program, looked up in PATH unless it holds a '/'.
    public var qemu: String
    /// Host files added to the guest at boot (the helper module, a test client, Suture itself): a
    /// second cpio archive appended to the cached initramfs in the run folder, so the shared
    /// initramfs is never rebuilt for them.
    public var extraFiles: [LabExtraFile]
    /// More kernel command-line words (`lockdown=integrity`, `module.sig_enforce=1`): what a real
    /// machine is booted with and cannot change while it runs.
    public var kernelArguments: [String]

    public init(kaslr: Bool? = nil, smp: Int = 2, memoryMB: Int = 512, nfs: Bool = false,
                bootTimeout: Double = 120, nfsTimeout: Double = 120, image: LabImage? = nil,
                qemu: String = "qemu-system-x86_64", extraFiles: [LabExtraFile] = [], kernelArguments: [String] = []) {
        self.extraFiles = extraFiles
        self.kernelArguments = kernelArguments
        self.kaslr = kaslr
        self.smp = smp
        self.memoryMB = memoryMB
        self.nfs = nfs
        self.bootTimeout = bootTimeout
        self.nfsTimeout = nfsTimeout
        self.image = image
        self.qemu = qemu
    }
}

/// One host file placed into the guest's initramfs at `up` time.
public struct LabExtraFile: Sendable, Hashable {
    /// Where it goes in the guest, relative to / (`lib/suture/extra/suture.ko`).
    public var guestPath: String
    public var hostPath: String
    public var mode: UInt32

    public init(guestPath: String, hostPath: String, mode: UInt32 = 0o644) {
        self.guestPath = guestPath
        self.hostPath = hostPath
        self.mode = mode
    }
}
