import ELF

/// One decoded machine instruction.
public struct Instruction: Sendable, Hashable {
    /// Address of the first byte (as given to the decoder: a section offset, a file or a live address).
    public var address: UInt64
    /// The instruction's bytes, prefixes included.
    public var bytes: [UInt8]
    /// As the decoder prints it (`je`, `callq`, `b.ne`); `(bad)` for undecodable bytes.
    public var mnemonic: String
    /// Operand text in the decoder's syntax; empty when there are none.
    public var operands: String
    public var size: Int { bytes.count }
    public var branch: BranchKind
    /// Destination of a direct branch or call; nil for anything else.
    public var target: UInt64?
    /// True for bytes the decoder could not make an instruction of.
    public var isInvalid: Bool

    public init(address: UInt64, bytes: [UInt8], mnemonic: String, operands: String,
                branch: BranchKind = .none, target: UInt64? = nil, isInvalid: Bool = false) {
        self.address = address
        self.bytes = bytes
        self.mnemonic = mnemonic
        self.operands = operands
        self.branch = branch
        self.target = target
        self.isInvalid = isInvalid
    }

    /// The address right after the instruction.
    public var endAddress: UInt64 { address &+ UInt64(bytes.count) }

    /// `0x2f: 74 39 je 0x6a`: how errors and reports name an instruction.
    public var summary: String {
        let text = operands.isEmpty ? mnemonic : mnemonic + " " + operands
        return "\(Hex.address(address)): \(Hex.bytes(bytes)) \(text)"
    }
}
