<?php
$in = fopen("php://input", "rb");
$ctx = hash_init("sha256");
$total = 0;
while (!feof($in)) {
    $chunk = fread($in, 65536);
    if ($chunk === false || $chunk === "") break;
    hash_update($ctx, $chunk);
    $total += strlen($chunk);
}
echo $total, " ", hash_final($ctx), "\n";
