<?php // the classic echo bot; must work unmodified
$received = json_decode(file_get_contents('php://input'))->body;
header('Content-Type: application/json');
echo json_encode(array('body' => "Did you say $received?"));
