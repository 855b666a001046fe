<?php echo str_repeat("x", 65536);
