from lmsys_arena.cli import main

main()
