from orchestrator_core.cli import main

main()
