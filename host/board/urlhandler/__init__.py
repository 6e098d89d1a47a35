"""pyserial URL handlers of the board driver (`serial.protocol_handler_packages`).

`import host.board` registers this package, after which `serial.serial_for_url("sim://?seed=3")`
opens a simulated board like any other port (`protocol_sim`).
"""
