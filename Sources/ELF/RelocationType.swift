/// Relocation type names (as readelf and objdump print them) and the size of the field each type
/// writes, for x86-64, i386 and AArch64. Numbers follow the psABI documents of each architecture.
public enum RelocationType {
    /// `R_X86_64_PLT32` for (4, .x86_64). Unknown numbers give `R_X86_64_<unknown 46>` (and
    /// `<unknown relocation 7 for machine 40>` for other machines), so a listing never loses the number.
    public static func name(_ type: UInt32, machine: Machine) -> String {
        let table: NameTables
        switch machine {
        case .x86_64: table = x86_64
        case .i386: table = i386
        case .aarch64: table = aarch64
        default: return "<unknown relocation \(type) for machine \(machine.rawValue)>"
        }
        return table.name(type) ?? "\(table.prefix)<unknown \(type)>"
    }

    /// How many bytes at `r_offset` the relocation writes, or nil when that is not fixed (COPY) or
    /// unknown. Types that write nothing (NONE, markers such as TLSDESC_CALL) give 0.
    public static func fieldSize(_ type: UInt32, machine: Machine) -> Int? {
        switch machine {
        case .x86_64: return x86_64FieldSize(type)
        case .i386: return i386FieldSize(type)
        case .aarch64: return aarch64FieldSize(type)
        default: return nil
        }
    }

    // MARK: Field sizes

    private static func x86_64FieldSize(_ type: UInt32) -> Int? {
        switch type {
        case 0, 35, 250, 251: return 0                                  // NONE, TLSDESC_CALL, GNU_VT*
        case 1, 6, 7, 8, 16, 17, 18, 24, 25, 27, 28, 29, 30, 31, 33, 37, 38: return 8
        case 36: return 16                                              // TLSDESC: two words
        case 2, 3, 4, 9, 10, 11, 19, 20, 21, 22, 23, 26, 32, 34, 39, 40, 41, 42,
             43, 44, 45, 46, 47, 48, 49, 50, 51: return 4
        case 12, 13: return 2
        case 14, 15: return 1
        default: return nil                                             // COPY (5) and unknown
        }
    }

    private static func i386FieldSize(_ type: UInt32) -> Int? {
        switch type {
        case 0, 25, 26, 27, 29, 30, 31, 40, 250, 251: return 0          // NONE, TLS markers, DESC_CALL
        case 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 14, 15, 16, 17, 18, 19, 24, 28,
             32, 33, 34, 35, 36, 37, 38, 39, 42, 43: return 4
        case 41: return 8                                               // TLS_DESC: two words
        case 20, 21: return 2
        case 22, 23: return 1
        default: return nil
        }
    }

    private static func aarch64FieldSize(_ type: UInt32) -> Int? {
        switch type {
        case 0, 256: return 0
        case 257, 260, 307, 1025, 1026, 1027, 1028, 1029, 1030, 1032: return 8
        case 1031: return 16                                            // TLSDESC: two words
        case 258, 261, 308: return 4
        case 259, 262: return 2
        case 263...313, 512...573: return 4                             // instruction fields
        // ILP32: 32-bit data words, 32-bit instructions.
        case 1, 3, 181...186, 188: return 4
        case 2, 4: return 2
        case 187: return 8
        case 5...28, 80...127: return 4
        default: return nil
        }
    }

    // MARK: Names

    /// Names for contiguous runs of type numbers; "" marks a gap.
    struct NameTables: Sendable {
        let prefix: String
        let runs: [(first: UInt32, names: [String])]

        func name(_ type: UInt32) -> String? {
            for run in runs where type >= run.first {
                let i = Int(type - run.first)
                if i < run.names.count, !run.names[i].isEmpty { return prefix + run.names[i] }
            }
            return nil
        }
    }

    static let x86_64 = NameTables(prefix: "R_X86_64_", runs: [
        (0, ["NONE", "64", "PC32", "GOT32", "PLT32", "COPY", "GLOB_DAT", "JUMP_SLOT", "RELATIVE", "GOTPCREL",
             "32", "32S", "16", "PC16", "8", "PC8", "DTPMOD64", "DTPOFF64", "TPOFF64", "TLSGD",
             "TLSLD", "DTPOFF32", "GOTTPOFF", "TPOFF32", "PC64", "GOTOFF64", "GOTPC32", "GOT64", "GOTPCREL64", "GOTPC64",
             "GOTPLT64", "PLTOFF64", "SIZE32", "SIZE64", "GOTPC32_TLSDESC", "TLSDESC_CALL", "TLSDESC", "IRELATIVE",
             "RELATIVE64", "PC32_BND", "PLT32_BND", "GOTPCRELX", "REX_GOTPCRELX",
             "CODE_4_GOTPCRELX", "CODE_4_GOTTPOFF", "CODE_4_GOTPC32_TLSDESC",
             "CODE_5_GOTPCRELX", "CODE_5_GOTTPOFF", "CODE_5_GOTPC32_TLSDESC",
             "CODE_6_GOTPCRELX", "CODE_6_GOTTPOFF", "CODE_6_GOTPC32_TLSDESC"]),
        (250, ["GNU_VTINHERIT", "GNU_VTENTRY"]),
    ])

    static let i386 = NameTables(prefix: "R_386_", runs: [
        (0, ["NONE", "32", "PC32", "GOT32", "PLT32", "COPY", "GLOB_DAT", "JUMP_SLOT", "RELATIVE", "GOTOFF",
             "GOTPC", "32PLT", "", "", "TLS_TPOFF", "TLS_IE", "TLS_GOTIE", "TLS_LE", "TLS_GD", "TLS_LDM",
             "16", "PC16", "8", "PC8", "TLS_GD_32", "TLS_GD_PUSH", "TLS_GD_CALL", "TLS_GD_POP", "TLS_LDM_32",
             "TLS_LDM_PUSH", "TLS_LDM_CALL", "TLS_LDM_POP", "TLS_LDO_32", "TLS_IE_32", "TLS_LE_32",
             "TLS_DTPMOD32", "TLS_DTPOFF32", "TLS_TPOFF32", "SIZE32", "TLS_GOTDESC", "TLS_DESC_CALL",
             "TLS_DESC", "IRELATIVE", "GOT32X"]),
        (200, ["USED_BY_INTEL_200"]),
        (250, ["GNU_VTINHERIT", "GNU_VTENTRY"]),
    ])

    static let aarch64 = NameTables(prefix: "R_AARCH64_", runs: [
        (0, ["NONE", "P32_ABS32", "P32_ABS16", "P32_PREL32", "P32_PREL16", "P32_MOVW_UABS_G0",
             "P32_MOVW_UABS_G0_NC", "P32_MOVW_UABS_G1", "P32_MOVW_SABS_G0", "P32_LD_PREL_LO19", "P32_ADR_PREL_LO21",
             "P32_ADR_PREL_PG_HI21", "P32_ADD_ABS_LO12_NC", "P32_LDST8_ABS_LO12_NC", "P32_LDST16_ABS_LO12_NC",
             "P32_LDST32_ABS_LO12_NC", "P32_LDST64_ABS_LO12_NC", "P32_LDST128_ABS_LO12_NC", "P32_TSTBR14",
             "P32_CONDBR19", "P32_JUMP26", "P32_CALL26", "P32_MOVW_PREL_G0", "P32_MOVW_PREL_G0_NC",
             "P32_MOVW_PREL_G1", "P32_GOT_LD_PREL19", "P32_ADR_GOT_PAGE", "P32_LD32_GOT_LO12_NC",
             "P32_LD32_GOTPAGE_LO14"]),
        // ILP32 (ELF32) numbers; binutils names them in ELF64 files too, and so do we.
        (80, ["P32_TLSGD_ADR_PREL21", "P32_TLSGD_ADR_PAGE21", "P32_TLSGD_ADD_LO12_NC", "P32_TLSLD_ADR_PREL21",
              "P32_TLSLD_ADR_PAGE21", "P32_TLSLD_ADD_LO12_NC", "", "P32_TLSLD_MOVW_DTPREL_G1",
              "P32_TLSLD_MOVW_DTPREL_G0", "P32_TLSLD_MOVW_DTPREL_G0_NC", "P32_TLSLD_ADD_DTPREL_HI12",
              "P32_TLSLD_ADD_DTPREL_LO12", "P32_TLSLD_ADD_DTPREL_LO12_NC", "", "", "", "", "", "", "", "", "", "",
              "P32_TLSIE_ADR_GOTTPREL_PAGE21", "P32_TLSIE_LD32_GOTTPREL_LO12_NC", "P32_TLSIE_LD_GOTTPREL_PREL19",
              "P32_TLSLE_MOVW_TPREL_G1", "P32_TLSLE_MOVW_TPREL_G0", "P32_TLSLE_MOVW_TPREL_G0_NC",
              "P32_TLSLE_ADD_TPREL_HI12", "P32_TLSLE_ADD_TPREL_LO12", "P32_TLSLE_ADD_TPREL_LO12_NC",
              "P32_TLSLE_LDST8_TPREL_LO12", "P32_TLSLE_LDST8_TPREL_LO12_NC", "P32_TLSLE_LDST16_TPREL_LO12",
              "P32_TLSLE_LDST16_TPREL_LO12_NC", "P32_TLSLE_LDST32_TPREL_LO12", "P32_TLSLE_LDST32_TPREL_LO12_NC",
              "P32_TLSLE_LDST64_TPREL_LO12", "P32_TLSLE_LDST64_TPREL_LO12_NC", "", "", "P32_TLSDESC_LD_PREL19",
              "P32_TLSDESC_ADR_PREL21", "P32_TLSDESC_ADR_PAGE21", "P32_TLSDESC_LD32_LO12_NC",
              "P32_TLSDESC_ADD_LO12_NC", "P32_TLSDESC_CALL"]),
        (180, ["P32_COPY", "P32_GLOB_DAT", "P32_JUMP_SLOT", "P32_RELATIVE", "P32_TLS_DTPMOD", "P32_TLS_DTPREL",
               "P32_TLS_TPREL", "P32_TLSDESC", "P32_IRELATIVE"]),
        (256, ["NULL", "ABS64", "ABS32", "ABS16", "PREL64", "PREL32", "PREL16",
               "MOVW_UABS_G0", "MOVW_UABS_G0_NC", "MOVW_UABS_G1", "MOVW_UABS_G1_NC", "MOVW_UABS_G2",
               "MOVW_UABS_G2_NC", "MOVW_UABS_G3", "MOVW_SABS_G0", "MOVW_SABS_G1", "MOVW_SABS_G2",
               "LD_PREL_LO19", "ADR_PREL_LO21", "ADR_PREL_PG_HI21", "ADR_PREL_PG_HI21_NC", "ADD_ABS_LO12_NC",
               "LDST8_ABS_LO12_NC", "TSTBR14", "CONDBR19", "", "JUMP26", "CALL26", "LDST16_ABS_LO12_NC",
               "LDST32_ABS_LO12_NC", "LDST64_ABS_LO12_NC", "MOVW_PREL_G0", "MOVW_PREL_G0_NC", "MOVW_PREL_G1",
               "MOVW_PREL_G1_NC", "MOVW_PREL_G2", "MOVW_PREL_G2_NC", "MOVW_PREL_G3", "", "", "", "", "",
               "LDST128_ABS_LO12_NC", "MOVW_GOTOFF_G0", "MOVW_GOTOFF_G0_NC", "MOVW_GOTOFF_G1",
               "MOVW_GOTOFF_G1_NC", "MOVW_GOTOFF_G2", "MOVW_GOTOFF_G2_NC", "MOVW_GOTOFF_G3", "GOTREL64",
               "GOTREL32", "GOT_LD_PREL19", "LD64_GOTOFF_LO15", "ADR_GOT_PAGE", "LD64_GOT_LO12_NC",
               "LD64_GOTPAGE_LO15"]),
        (512, ["TLSGD_ADR_PREL21", "TLSGD_ADR_PAGE21", "TLSGD_ADD_LO12_NC", "TLSGD_MOVW_G1", "TLSGD_MOVW_G0_NC",
               "TLSLD_ADR_PREL21", "TLSLD_ADR_PAGE21", "TLSLD_ADD_LO12_NC", "TLSLD_MOVW_G1", "TLSLD_MOVW_G0_NC",
               "TLSLD_LD_PREL19", "TLSLD_MOVW_DTPREL_G2", "TLSLD_MOVW_DTPREL_G1", "TLSLD_MOVW_DTPREL_G1_NC",
               "TLSLD_MOVW_DTPREL_G0", "TLSLD_MOVW_DTPREL_G0_NC", "TLSLD_ADD_DTPREL_HI12", "TLSLD_ADD_DTPREL_LO12",
               "TLSLD_ADD_DTPREL_LO12_NC", "TLSLD_LDST8_DTPREL_LO12", "TLSLD_LDST8_DTPREL_LO12_NC",
               "TLSLD_LDST16_DTPREL_LO12", "TLSLD_LDST16_DTPREL_LO12_NC", "TLSLD_LDST32_DTPREL_LO12",
               "TLSLD_LDST32_DTPREL_LO12_NC", "TLSLD_LDST64_DTPREL_LO12", "TLSLD_LDST64_DTPREL_LO12_NC",
               "TLSIE_MOVW_GOTTPREL_G1", "TLSIE_MOVW_GOTTPREL_G0_NC", "TLSIE_ADR_GOTTPREL_PAGE21",
               "TLSIE_LD64_GOTTPREL_LO12_NC", "TLSIE_LD_GOTTPREL_PREL19", "TLSLE_MOVW_TPREL_G2",
               "TLSLE_MOVW_TPREL_G1", "TLSLE_MOVW_TPREL_G1_NC", "TLSLE_MOVW_TPREL_G0", "TLSLE_MOVW_TPREL_G0_NC",
               "TLSLE_ADD_TPREL_HI12", "TLSLE_ADD_TPREL_LO12", "TLSLE_ADD_TPREL_LO12_NC",
               "TLSLE_LDST8_TPREL_LO12", "TLSLE_LDST8_TPREL_LO12_NC", "TLSLE_LDST16_TPREL_LO12",
               "TLSLE_LDST16_TPREL_LO12_NC", "TLSLE_LDST32_TPREL_LO12", "TLSLE_LDST32_TPREL_LO12_NC",
               "TLSLE_LDST64_TPREL_LO12", "TLSLE_LDST64_TPREL_LO12_NC", "TLSDESC_LD_PREL19", "TLSDESC_ADR_PREL21",
               "TLSDESC_ADR_PAGE21", "TLSDESC_LD64_LO12", "TLSDESC_ADD_LO12", "TLSDESC_OFF_G1",
               "TLSDESC_OFF_G0_NC", "TLSDESC_LDR", "TLSDESC_ADD", "TLSDESC_CALL", "TLSLE_LDST128_TPREL_LO12",
               "TLSLE_LDST128_TPREL_LO12_NC", "TLSLD_LDST128_DTPREL_LO12", "TLSLD_LDST128_DTPREL_LO12_NC"]),
        (1024, ["COPY", "GLOB_DAT", "JUMP_SLOT", "RELATIVE", "TLS_DTPMOD64", "TLS_DTPREL64", "TLS_TPREL64", "TLSDESC",
                "IRELATIVE"]),
    ])
}
