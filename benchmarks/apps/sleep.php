<?php
usleep(1000 * (isset($_GET["ms"]) ? (int)$_GET["ms"] : 50));
echo "slept\n";
