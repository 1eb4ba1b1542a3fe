/// One program header.
public struct Segment: Sendable, Hashable {
    /// `p_type` (see `ELFConstants.PT_*`).
    public var type: UInt32
    /// `p_flags` (see `ELFConstants.PF_*`).
    public var flags: UInt32
    public var offset: UInt64
    public var virtualAddress: UInt64
    public var physicalAddress: UInt64
    public var fileSize: UInt64
    public var memorySize: UInt64
    public var alignment: UInt64

    public init(type: UInt32, flags: UInt32, offset: UInt64, virtualAddress: UInt64, physicalAddress: UInt64,
                fileSize: UInt64, memorySize: UInt64, alignment: UInt64) {
        self.type = type
        self.flags = flags
        self.offset = offset
        self.virtualAddress = virtualAddress
        self.physicalAddress = physicalAddress
        self.fileSize = fileSize
        self.memorySize = memorySize
        self.alignment = alignment
    }

    public var isLoadable: Bool { type == ELFConstants.PT_LOAD }
    public var isReadable: Bool { flags & ELFConstants.PF_R != 0 }
    public var isWritable: Bool { flags & ELFConstants.PF_W != 0 }
    public var isExecutable: Bool { flags & ELFConstants.PF_X != 0 }
}
