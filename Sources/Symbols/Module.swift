import ELF
