from orchestrator_core.launcher import main

main()
