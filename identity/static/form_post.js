// OAuth 2.0 Form Post Response Mode: send the answer to the app at once (the page also has a
// button for browsers without JavaScript).
"use strict";
document.getElementById("form-post").submit();
